"""The catalogue of attacks, one module per category.

Importing this package registers every attack in :data:`rlm.security.model.ATTACKS`.  The modules
are imported in the fixed order of ``ORDER``: it is the catalogue order (``ATTACKS``, ``select_attacks``).
"""

from __future__ import annotations

import importlib

ORDER = ("network", "files", "privilege", "secrets", "resources", "bridge", "answer")

for _name in ORDER:
    importlib.import_module(f"{__name__}.{_name}")

"""How the embedded llama-server shares its KV cache between requests: slot setups and their flags."""

from __future__ import annotations

import dataclasses

# Slots: the root conversation keeps its cached prefix in one while sub-calls use the others;
# with a unified KV cache every slot may use the whole window.  By default llama-server moves
# idle slots to its RAM prompt cache and clears them when another task starts, and a cached
# conversation that is a prefix of a longer one is not saved again: the root's prefix was then
# read again after a sub-call and at the start of a run whose question was asked before
# (17 s for 1,400 tokens here).
# Idle slots keep their KV instead (a new request picks the slot sharing the longest prefix);
# the RAM cache, bounded, keeps what a slot gives up.
PARALLEL_SLOTS = 2
CACHE_RAM_MIB = 1024


@dataclasses.dataclass(frozen=True)
class SlotProfile:
    """How the server shares its KV cache between requests."""

    name: str
    slots: int
    keep_idle_slots: bool  # False: llama-server's default (idle slots moved to RAM and cleared)

    def flags(self) -> list[str]:
        flags = ["--parallel", str(self.slots)]
        if self.slots > 1:
            flags.append("--kv-unified")
        if self.keep_idle_slots:
            flags += ["--no-cache-idle-slots", "--cache-ram", str(CACHE_RAM_MIB)]
        return flags


DEFAULT_PROFILE = SlotProfile("two-slots", PARALLEL_SLOTS, keep_idle_slots=True)
ONE_SLOT_PROFILE = SlotProfile("one-slot", 1, keep_idle_slots=False)  # what rlm's server was before

"""The fault-round regression suite (issue 33); see conftest.py for which file covers which defect."""

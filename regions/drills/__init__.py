"""Failover drills: scenarios, the runner, its journal and reports.

regionkit drill run region-outage --region ap-south-1 --duration 5
"""

from regions.drills.journal import DrillJournal, load_history, save_journal
from regions.drills.runner import DrillOptions, DrillRunner
from regions.drills.scenarios import SCENARIOS, Scenario, get_scenario

__all__ = [
    "SCENARIOS",
    "DrillJournal",
    "DrillOptions",
    "DrillRunner",
    "Scenario",
    "get_scenario",
    "load_history",
    "save_journal",
]

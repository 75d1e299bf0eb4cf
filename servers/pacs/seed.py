"""Loading the demo plan's DICOM instances into the store on first start (no HTTP involved)."""

from __future__ import annotations

import logging

from servers.demo_data.dicom import iter_plan, plan_size
from servers.demo_data.plan import DemoPlan
from servers.pacs.store import Store

log = logging.getLogger("s4s.pacs.seed")


def seed(store: Store, plan: DemoPlan) -> int:
    """Store every instance of ``plan`` that is not stored yet; return how many were added.

    Instances are generated one at a time (a plan may describe gigabytes); a store that already holds
    the whole plan is detected by its instance count and UIDs, so a restart does no work.
    """
    expected = plan_size(plan)
    if store.count_instances() >= expected and all(
            store.has_instance(s.series[-1].instance_uids[-1]) for _, s in plan.studies()):
        return 0
    added = 0
    for uid, data in iter_plan(plan):
        if store.has_instance(uid):
            continue
        store.put(data)
        added += 1
    log.info("seeded %d DICOM instances (%d in the plan)", added, expected)
    return added

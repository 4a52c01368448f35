"""`FairQueue`: one queue per client, served round-robin, so no client's backlog starves another.

A client that queues 100,000 jobs and a client that sends one job at a time take turns job by job: the
second client's job waits behind at most one job of each other client, not behind the backlog. Jobs that
come back from a dead worker go to a front lane that is served first.

Lanes are changed only through the queue (`extend`, `cancel`, `drop`): a lane emptied behind its back would
keep its turn, and `popleft` would find it empty. A lane can be `park`ed: out of turn, its tasks kept, until
`unpark` (ppserver parks the lane of a client that does not read its results).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from ppft_worker.runtime import Task

__all__ = ["FairQueue"]


class FairQueue:
    """The `TaskQueue` nodes take from, merged fairly from per-client lanes."""

    def __init__(self) -> None:
        self._front: deque[Task] = deque()
        self._lanes: deque[deque[Task]] = deque()  # non-empty lanes, in turn order
        self._parked: dict[int, deque[Task]] = {}  # id(lane) -> lane: lanes out of turn until unparked

    def __bool__(self) -> bool:
        return bool(self._front) or bool(self._lanes)

    def __len__(self) -> int:
        waiting = sum(len(lane) for lane in self._lanes) + sum(len(lane) for lane in self._parked.values())
        return len(self._front) + waiting

    def __getitem__(self, index: int) -> Task:
        if index != 0:
            raise IndexError("FairQueue only exposes its head")
        if self._front:
            return self._front[0]
        return self._lanes[0][0]

    def popleft(self) -> Task:
        if self._front:
            return self._front.popleft()
        lanes = self._lanes
        lane = lanes[0]
        task = lane.popleft()
        if lane:
            lanes.rotate(-1)
        else:
            lanes.popleft()
        return task

    def single_lane(self) -> deque[Task] | None:
        """The lane of the only client with queued jobs, when nothing was requeued: nodes may take from it
        directly (fairness has no one to be fair to), then `prune()` must run before the next `popleft`."""
        lanes = self._lanes
        if len(lanes) == 1 and not self._front:
            return lanes[0]
        return None

    def prune(self) -> None:
        """Forget lanes emptied through `single_lane()`."""
        lanes = self._lanes
        if lanes and not lanes[0]:
            lanes.popleft()

    def extend(self, lane: deque[Task], tasks: Iterable[Task]) -> None:
        """Append `tasks` to a client's `lane`, and give the lane a turn if it had none."""
        was_empty = not lane
        lane.extend(tasks)
        if was_empty and lane and id(lane) not in self._parked:
            self._lanes.append(lane)

    def requeue(self, tasks: list[Task]) -> None:
        """Tasks back from a lost worker or link: served before anything else, in their order."""
        self._front.extendleft(reversed(tasks))

    def cancel(self, lane: deque[Task], unwanted: Callable[[Task], bool]) -> list[Task]:
        """Remove the tasks of a client's `lane`, and those of the front lane, for which `unwanted(task)`
        holds; returns them, in queue order (the front lane's first)."""
        removed = [task for task in self._front if unwanted(task)]
        if removed:
            kept = [task for task in self._front if not unwanted(task)]
            self._front.clear()
            self._front.extend(kept)
        taken = [task for task in lane if unwanted(task)]
        if taken:
            kept = [task for task in lane if not unwanted(task)]
            lane.clear()
            lane.extend(kept)
            if not lane:
                self._forget(lane)
        return removed + taken

    def drop(self, lane: deque[Task]) -> list[Task]:
        """Remove a client's lane (it disconnected); returns what was still queued."""
        tasks = list(lane)
        lane.clear()
        self._forget(lane)
        self._parked.pop(id(lane), None)
        return tasks

    def park(self, lane: deque[Task]) -> None:
        """Take a client's lane out of turn, keeping its tasks, until `unpark`."""
        if id(lane) not in self._parked:
            self._parked[id(lane)] = lane
            self._forget(lane)

    def unpark(self, lane: deque[Task]) -> None:
        if self._parked.pop(id(lane), None) is not None and lane:
            self._lanes.append(lane)

    def _forget(self, lane: deque[Task]) -> None:
        """Take an emptied lane out of the turn order (by identity: two empty lanes compare equal)."""
        for index, other in enumerate(self._lanes):
            if other is lane:
                del self._lanes[index]
                return

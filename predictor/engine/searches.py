"""The running beam searches on the engine thread: starting them, one step each, narrowing failures.

A search (generation/diverse.BeamSearch, through the backend) answers one job per prompt. Each engine
iteration steps every running search once (scheduling.py). A failure fails a lone request; a shared
search's requests start again, each alone (retry.py's rule), so only the culprit fails. Out of memory
frees the allocator's cache first; an unrecoverable error is raised, for the worker to fail the engine.
The worker hands finished answers to the jobs (worker.Worker._settle_beams) and fails the failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from predictor.core import Delta, GenerationRequest
from predictor.engine import faults as fault
from predictor.engine.jobs import Job
from predictor.generation.retry import together_or_alone

log = logging.getLogger("predictor")

Failed = list[tuple[Job, Exception]]
Finished = list[tuple[list[Job], list[list[Delta]]]]


@dataclass(eq=False)
class Search:
    """A running beam search and the jobs it answers (one per prompt, in its order)."""

    jobs: list[Job]
    search: object  # the backend's search: rows, length, steps, step()

    @property
    def requests(self) -> list[GenerationRequest]:
        return [job.request for job in self.jobs]


class Searches:
    """The running searches, oldest first. ``backend``: the worker's (its start_beams and
    beam_outputs); ``check``: the engine's fault injection, before each model call."""

    def __init__(self, backend, check: Callable[[Iterable[GenerationRequest]], None]) -> None:
        self._backend, self._check = backend, check
        self.running: list[Search] = []

    @property
    def rows(self) -> int:
        return sum(s.search.rows for s in self.running)

    @property
    def tokens(self) -> int:
        """The searches' caches at their longest: rows x the length each row may reach."""
        return sum(s.search.rows * s.search.length for s in self.running)

    @property
    def jobs(self) -> int:
        return sum(len(s.jobs) for s in self.running)

    def start(self, jobs: Sequence[Job]) -> Failed:
        """A search over ``jobs`` after its prefill; if that fails, each job's own. Returns the failed."""
        failed: Failed = []
        for group, outcome in together_or_alone(
            jobs,
            self._begin,
            "%d beam searches failed to start together (%s); starting them one by one",
            fatal=fault.is_unrecoverable,
        ):
            if isinstance(outcome, Exception):
                failed.append((group[0], outcome))
            else:
                self.running.append(outcome)
        return failed

    def _begin(self, jobs: Sequence[Job]) -> Search:
        self._check(job.request for job in jobs)
        return Search(list(jobs), self._backend.start_beams([job.request for job in jobs]))

    def step(self) -> tuple[Finished, Failed]:
        """One token for every row of every running search: the searches that ended with their answers,
        and the jobs that failed."""
        finished: Finished = []
        failed: Failed = []
        for running in list(self.running):
            try:
                self._check(running.requests)
                if not running.search.step():
                    continue
                finished.append((running.jobs, self._backend.beam_outputs(running.requests, running.search)))
            except Exception as exc:
                if fault.is_unrecoverable(exc):
                    raise
                failed += self._failed(running, exc)
            self.running.remove(running)
        return finished, failed

    def _failed(self, running: Search, exc: Exception) -> Failed:
        if fault.is_out_of_memory(exc):
            fault.free_cached_memory()
        if len(running.jobs) == 1:
            return [(running.jobs[0], exc)]
        log.warning("a beam search of %d failed (%s); running its requests one by one", len(running.jobs), exc)
        failed: Failed = []
        for job in running.jobs:
            if not job.cancelled:
                failed += self.start([job])
        return failed

    def abandoned(self) -> list[Search]:
        """Drop the searches whose every job is cancelled (nobody waits for them): their caches go now."""
        gone = [s for s in self.running if all(job.cancelled for job in s.jobs)]
        self.running = [s for s in self.running if s not in gone]
        return gone

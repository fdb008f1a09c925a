"""A very large map fans out in levels: PackRunMapGroup stands between the run and the chunks.

A map of more chunks than `MAP_CHILDREN_PER_WORKFLOW` would put about 9 events per chunk in the
run's history (a million items: 2,000 chunks, 18,000 events). Instead the run starts groups, each
covering a contiguous range of chunks, which start those chunks, or smaller groups when even a
group would have too many (`compiler.history.map_children` decides for every level). So every
history, the run's, each group's and each chunk's, holds at most `MAP_CHILDREN_PER_WORKFLOW`
child starts whatever the item count.

A group hands back one bounded `ChunkResult` for its whole range: plainly succeeded items as index
ranges, items never started (an earlier one failed) as ranges, outputs sparsely (`{}` costs
nothing), and in full only the states and warnings of items that did not plainly succeed. What
all groups hand back is capped by `MAP_RESULTS_LIMIT_BYTES`, since the run's history holds it: past
its share a group stops starting chunks and fails with `map-results-too-large`, saying why.

Cancelling the run cancels its groups, which cancel their children (the SDK sends the request
down when the awaiting task is cancelled); should a group be closed without that, its children's
parent close policy (TERMINATE, the default) ends them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import zlib
from collections.abc import Iterable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from compiler import history
    from workflows.contract.activities import ArtifactRecord
    from workflows.contract.names import CHUNK_WORKFLOW_TYPE, GROUP_WORKFLOW_TYPE
    from workflows.contract.state import ChunkResult, LogEntry, MapGroupInput, StepState
    from workflows.pacing import CHUNK_START_COST, StartBudget

MAP_RESULTS_TOO_LARGE = "MapResultsTooLarge"
"""The ApplicationError type a group fails with when its items hand back more than its share of
MAP_RESULTS_LIMIT_BYTES; the map step's reason is then `map-results-too-large`."""
MAP_GROUP_FAILED = "MapGroupFailed"
"""The ApplicationError type a group fails with when a child workflow of it failed (not an
item: a chunk workflow itself), so the run's map fails with the cause's message."""


def group_id(parent_id: str, first: int, count: int) -> str:
    """A group's workflow id, under the workflow that starts it (a chunk's is `.../chunk-N`)."""
    return f"{parent_id}/chunks-{first}-{first + count - 1}"


def child_failure(exc: ChildWorkflowError) -> ApplicationError:
    """What a failed child workflow (chunk or group) means to the group above it: too large
    stays too large (so the run can name the reason), anything else is the group's failure."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type == MAP_RESULTS_TOO_LARGE:
        return ApplicationError(cause.message, type=MAP_RESULTS_TOO_LARGE, non_retryable=True)
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
    return ApplicationError(message, type=MAP_GROUP_FAILED, non_retryable=True)


def dense_outputs(result: ChunkResult, start: int, count: int) -> list[Any]:
    """A child's items' outputs, one per item from `start`: a group's are sparse (`outputsAt`,
    `{}` where absent, None for items it never started), a chunk's a plain list."""
    if result.outputsAt is None:
        return list(result.outputs)
    outputs: list[Any] = [{}] * count
    for first, last in result.skippedItems:
        outputs[first - start : last + 1 - start] = [None] * (last + 1 - first)
    for index, value in result.outputsAt:
        outputs[index - start] = value
    return outputs


def item_counts(result: ChunkResult, map_id: str) -> dict[str, int]:
    """How a child's items ended, by the status of each item's own (template) step."""
    counts: dict[str, int] = {}
    plain = sum(last + 1 - first for first, last in result.succeededItems)
    if plain:
        counts["Succeeded"] = plain
    skipped = sum(last + 1 - first for first, last in result.skippedItems)
    if skipped:
        counts["Skipped"] = skipped
    for state in result.steps:
        if state.parentId == map_id:
            counts[state.status] = counts.get(state.status, 0) + 1
    by_condition = bit_indexes(unpack_bits(result.skippedByCondition), 0, 1 << 62)
    if by_condition:
        counts["Skipped"] = counts.get("Skipped", 0) + len(by_condition)
    for step_id in result.succeeded:
        if _is_item_root(step_id, map_id):
            counts["Succeeded"] = counts.get("Succeeded", 0) + 1
    return counts


def _is_item_root(step_id: str, map_id: str) -> bool:
    """`map[7]::one` is an item's own step; `map[7]::one[2]::x` is below it."""
    rest = step_id.removeprefix(f"{map_id}[")
    return rest != step_id and rest.count("::") == 1


def add_range(ranges: list[tuple[int, int]], first: int, last: int) -> None:
    """Append an inclusive range, joining it to the last one when they touch."""
    if ranges and ranges[-1][1] == first - 1:
        ranges[-1] = (ranges[-1][0], last)
    else:
        ranges.append((first, last))


def pack_bits(bits: bytearray) -> str:
    """A bitmap of items as ChunkResult.skippedByCondition holds it."""
    return base64.b64encode(zlib.compress(bytes(bits), 9)).decode()


def unpack_bits(packed: str | None) -> bytearray:
    return bytearray(zlib.decompress(base64.b64decode(packed))) if packed else bytearray()


def bit_indexes(bits: bytearray, start: int, end: int) -> list[int]:
    """The items in `start..end-1` whose bit is set."""
    found = []
    for byte in range(start // 8, min(len(bits), (end + 7) // 8)):
        if bits[byte]:
            for bit in range(8):
                index = byte * 8 + bit
                if bits[byte] >> bit & 1 and start <= index < end:
                    found.append(index)
    return found


def skipped_by_condition(steps: list[StepState], map_id: str) -> tuple[list[StepState], list[int]]:
    """A chunk's states less those of items skipped because their `when` was false (every step
    of the item Skipped so, which is all there is to say of it), and those items' indexes."""
    head = map_id + "["
    candidates: set[int] = set()
    for state in steps:
        if (
            state.parentId == map_id
            and state.status == "Skipped"
            and state.statusReason == "condition-false"
        ):
            index = _index(state.stepId, head)
            if index is not None:
                candidates.add(index)
    if not candidates:
        return steps, []
    for state in steps:
        index = _index(state.stepId, head)
        if index in candidates and not (
            state.status == "Skipped"
            and state.statusReason == "condition-false"
            and not state.enabled
            and not state.outputs
            and state.attempts == 0
        ):
            candidates.discard(index)
    kept = [s for s in steps if _index(s.stepId, head) not in candidates]
    return kept, sorted(candidates)


def _index(step_id: str, head: str) -> int | None:
    if not step_id.startswith(head):
        return None
    end = step_id.find("]::", len(head))
    digits = step_id[len(head) : end]
    return int(digits) if end > 0 and digits.isdigit() else None


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())) or "none"


class Tally:
    """What a group's children handed back, gathered into one result, and its size so far."""

    def __init__(self, map_id: str, limit: int) -> None:
        self.map_id = map_id
        self.limit = limit
        self.by_condition = bytearray()
        self.any_by_condition = False
        self.size = 0
        self.failed = False
        self.steps: list[StepState] = []
        self.logs: list[LogEntry] = []
        self.artifacts: list[ArtifactRecord] = []
        self.succeeded: list[str] = []
        self.succeeded_at: str | None = None
        self.ranges: list[tuple[int, int]] = []
        self.skipped: list[tuple[int, int]] = []
        self.outputs: list[tuple[int, Any]] = []

    @property
    def too_large(self) -> bool:
        return self.size > self.limit

    def add(self, result: ChunkResult, start: int, count: int) -> None:
        """A child's result for items `start ..` (`count` of them)."""
        self.failed = self.failed or result.failed
        steps, skipped = skipped_by_condition(result.steps, self.map_id)
        skipped += bit_indexes(unpack_bits(result.skippedByCondition), start, start + count)
        for index in skipped:
            if len(self.by_condition) <= index // 8:
                self.by_condition.extend(bytes(index // 8 + 1 - len(self.by_condition)))
            self.by_condition[index // 8] |= 1 << (index % 8)
        self.any_by_condition = self.any_by_condition or bool(skipped)
        self.size += len(skipped) // 8 + 1
        self.steps.extend(steps)
        self.size += sum(len(state.model_dump_json()) for state in steps)
        self.logs.extend(result.logs)
        self.size += sum(len(entry.model_dump_json()) for entry in result.logs)
        self.artifacts.extend(result.artifacts)
        self.size += sum(len(record.model_dump_json()) for record in result.artifacts)
        self.succeeded.extend(result.succeeded)
        self.size += sum(len(step_id) + 3 for step_id in result.succeeded)
        if result.succeededAt is not None and (
            self.succeeded_at is None or result.succeededAt > self.succeeded_at
        ):
            self.succeeded_at = result.succeededAt
        for first, last in sorted(result.succeededItems):
            add_range(self.ranges, first, last)
        self.skip_ranges(result.skippedItems)
        for offset, value in enumerate(dense_outputs(result, start, count)):
            if value != {}:
                self.outputs.append((start + offset, value))
                self.size += len(json.dumps(value)) + 10
        self.size += 20 * (len(result.succeededItems) + len(result.skippedItems))

    def skip_ranges(self, ranges: Iterable[tuple[int, int]]) -> None:
        for first, last in ranges:
            self.skipped.append((first, last))

    def result(self) -> ChunkResult:
        skipped: list[tuple[int, int]] = []
        for first, last in sorted(self.skipped):
            add_range(skipped, first, last)
        return ChunkResult(
            steps=self.steps,
            logs=self.logs,
            outputs=[],
            outputsAt=sorted(self.outputs, key=lambda pair: pair[0]),
            failed=self.failed,
            artifacts=self.artifacts,
            succeeded=self.succeeded,
            succeededAt=self.succeeded_at,
            succeededItems=sorted(self.ranges),
            skippedItems=skipped,
            skippedByCondition=pack_bits(self.by_condition) if self.any_by_condition else None,
        )


def too_large_message(map_id: str, first: int, last: int, size: int, limit: int) -> str:
    return (
        f"items {first}..{last} of {map_id} handed back {size:,} bytes (outputs and the states "
        f"of items that did not plainly succeed), more than their share ({limit:,} bytes) of the "
        f"{history.MAP_RESULTS_LIMIT_BYTES:,} a map of more than "
        f"{history.MAP_CHUNK_SIZE * history.MAP_CHILDREN_PER_WORKFLOW:,} items may hand back "
        "to the run: have the items store large outputs as files (artifacts) and return little"
    )


@workflow.defn(name=GROUP_WORKFLOW_TYPE)
class PackRunMapGroup:
    """Starts chunks `chunk.chunkNumber ..` of one map (or groups of them) for the workflow
    above, at most `chunksAtOnce` chunks at a time, and hands back one bounded result."""

    @workflow.run
    async def run(self, group: MapGroupInput) -> ChunkResult:
        chunk = group.chunk
        size = group.chunkSize
        me = workflow.info().workflow_id
        first_item = chunk.chunkNumber * size
        end_item = min(group.itemCount, (chunk.chunkNumber + group.chunks) * size)
        tally = Tally(chunk.mapStepId, group.resultBytes)
        span = history.map_span(group.chunks)
        children_at_once = max(1, math.ceil(group.chunksAtOnce / span))
        share = max(1, math.ceil(group.chunksAtOnce / children_at_once))
        gate = asyncio.Semaphore(children_at_once)
        starts = StartBudget()
        stopped = False
        done = [0]

        async def one(first: int, count: int) -> None:
            nonlocal stopped
            lo, hi = first * size, min(group.itemCount, (first + count) * size)
            async with gate:
                await starts.take(CHUNK_START_COST)
                if stopped:
                    tally.skip_ranges([(lo, hi - 1)])
                    return
                own = chunk.model_copy(update={"chunkNumber": first, "startIndex": lo})
                if span == 1:
                    result: ChunkResult = await workflow.execute_child_workflow(
                        CHUNK_WORKFLOW_TYPE,
                        own,
                        id=f"{me}/chunk-{first}",
                        result_type=ChunkResult,
                        static_summary=f"{chunk.mapStepId}: items {lo}..{hi - 1}",
                    )
                else:
                    result = await workflow.execute_child_workflow(
                        GROUP_WORKFLOW_TYPE,
                        group.model_copy(
                            update={
                                "chunk": own,
                                "chunks": count,
                                "chunksAtOnce": min(share, count),
                            }
                        ),
                        id=group_id(me, first, count),
                        result_type=ChunkResult,
                        static_summary=f"{chunk.mapStepId}: items {lo}..{hi - 1} in {count} chunks",
                    )
            tally.add(result, lo, hi - lo)
            done[0] += hi - lo
            # What the Web UI shows of this group (no history event): how far it is.
            workflow.set_current_details(
                f"`{chunk.mapStepId}` items {first_item}..{end_item - 1}: {done[0]:,} of "
                f"{end_item - first_item:,} done" + (" (an item failed)" if tally.failed else "")
            )
            if (result.failed and not chunk.continueOnError) or tally.too_large:
                stopped = True

        try:
            await asyncio.gather(
                *(one(f, c) for f, c in history.map_children(chunk.chunkNumber, group.chunks))
            )
        except ChildWorkflowError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError from exc
            raise child_failure(exc) from None
        if tally.too_large:
            raise ApplicationError(
                too_large_message(
                    chunk.mapStepId, first_item, end_item - 1, tally.size, tally.limit
                ),
                type=MAP_RESULTS_TOO_LARGE,
                non_retryable=True,
            )
        return tally.result()

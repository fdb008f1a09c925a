"""Every step kind, nesting, `when`, outputs between steps and failure paths, on the dev server."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.helpers import run_to_end, steps_by_id

HEAD = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: t, version: 1.0.0}
spec:
"""


def pack(body: str) -> str:
    return HEAD + body


class TestRunSteps:
    async def test_outputs_flow_to_later_steps(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: who, type: string, required: true}]
  steps:
    - id: greet
      run: {uses: "builtin:echo", with: {text: "hello {{ inputs.who }}", n: 3}}
    - id: again
      run: {uses: "builtin:echo", with: {copy: "{{ steps.greet.outputs.text }}", n: "{{ steps.greet.outputs.n }}"}}
""")
        result, state, logs = await run_to_end(dev_env.client, tmp_path, manifest, {"who": "ops"})
        assert result.status == "succeeded"
        steps = steps_by_id(state)
        assert steps["again"].outputs == {"copy": "hello ops", "n": 3}
        assert steps["greet"].status == "Succeeded" and steps["greet"].attempts == 1
        events = [e.eventType for e in logs]
        assert events[:2] == ["run.created", "run.started"]
        assert events[-1] == "run.completed"
        assert [e.sequence for e in logs] == list(range(1, len(logs) + 1))

    async def test_failure_fails_run_and_skips_the_rest(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  steps:
    - id: ok
      run: {uses: "builtin:noop"}
    - id: boom
      run: {uses: "builtin:fail", with: {message: "broken on purpose"}}
    - id: never
      run: {uses: "builtin:noop"}
""")
        result, state, logs = await run_to_end(dev_env.client, tmp_path, manifest)
        assert result.status == "failed"
        steps = steps_by_id(state)
        assert steps["boom"].status == "Failed"
        assert steps["never"].status == "Skipped"
        assert steps["never"].statusReason == "previous-step-failed"
        failed = [e for e in logs if e.eventType == "step.failed"]
        assert "broken on purpose" in failed[0].message
        assert logs[-1].eventType == "run.failed"

    async def test_step_continue_on_error(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  steps:
    - id: boom
      continueOnError: true
      run: {uses: "builtin:fail"}
    - id: after
      run: {uses: "builtin:noop"}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        assert result.status == "succeeded"
        assert steps_by_id(state)["boom"].status == "Failed"
        assert steps_by_id(state)["after"].status == "Succeeded"

    async def test_pack_level_continue_on_error(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  failure: {continueOnError: true}
  steps:
    - id: boom
      run: {uses: "builtin:fail"}
    - id: after
      run: {uses: "builtin:noop"}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        assert result.status == "succeeded"
        assert steps_by_id(state)["after"].status == "Succeeded"

    async def test_unknown_executor_is_a_clear_step_failure(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  steps:
    - id: scan
      run: {uses: "builtin:scanner"}
""")
        result, _, logs = await run_to_end(dev_env.client, tmp_path, manifest)
        assert result.status == "failed"
        failed = next(e for e in logs if e.eventType == "step.failed")
        assert "builtin:scanner" in failed.message

    async def test_when_false_skips_with_reason(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: deploy, type: boolean, default: false}]
  steps:
    - id: build
      run: {uses: "builtin:echo", with: {ok: true}}
    - id: deploy
      when: "{{ inputs.deploy }}"
      run: {uses: "builtin:noop"}
    - id: notify
      when: "steps.build.outputs.ok"
      run: {uses: "builtin:noop"}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "succeeded"
        assert (steps["deploy"].status, steps["deploy"].statusReason, steps["deploy"].enabled) == (
            "Skipped",
            "condition-false",
            False,
        )
        assert steps["notify"].status == "Succeeded"


class TestBlocks:
    async def test_parallel_runs_children_and_collects_outputs(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  steps:
    - id: fan
      parallel:
        maxParallel: 2
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {v: 1}}}
          - {id: b, run: {uses: "builtin:echo", with: {v: 2}}}
          - {id: c, run: {uses: "builtin:sleep", with: {seconds: 0.2}}}
    - id: sum
      run: {uses: "builtin:echo", with: {total: "{{ steps.fan.outputs.a.v }}-{{ steps.b.outputs.v }}"}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "succeeded"
        assert steps["fan"].maxParallel == 2
        assert steps["a"].parentId == "fan"
        assert steps["sum"].outputs == {"total": "1-2"}

    async def test_parallel_failure_and_block_continue_on_error(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  steps:
    - id: tolerant
      parallel:
        continueOnError: true
        steps:
          - {id: bad, run: {uses: "builtin:fail"}}
          - {id: good, run: {uses: "builtin:noop"}}
    - id: strict
      parallel:
        maxParallel: 1
        steps:
          - {id: bad2, run: {uses: "builtin:fail"}}
          - {id: later, run: {uses: "builtin:noop"}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "failed"
        assert steps["good"].status == "Succeeded"
        assert steps["tolerant"].status == "Failed"  # honest about its child, but the run went on
        assert steps["strict"].status == "Failed"
        assert (steps["later"].status, steps["later"].statusReason) == (
            "Skipped",
            "previous-step-failed",
        )

    async def test_map_iterations_have_template_ids(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: hosts, type: array, default: [a, b, c]}]
  steps:
    - id: ping
      map:
        items: "{{ inputs.hosts }}"
        maxParallel: 2
        step: {id: one, run: {uses: "builtin:echo", with: {host: "{{ item }}", i: "{{ index }}"}}}
    - id: after
      run: {uses: "builtin:echo", with: {hosts: "{{ steps.ping.outputs.results[*].host }}"}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "succeeded"
        assert steps["ping[1]::one"].outputs == {"host": "b", "i": 1}
        assert steps["ping[1]::one"].templateId == "one"
        assert steps["after"].outputs == {"hosts": ["a", "b", "c"]}

    async def test_map_items_not_a_list_fails_the_step(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: hosts, type: string, default: "x"}]
  steps:
    - id: ping
      map: {items: "inputs.hosts", step: {id: one, run: {uses: "builtin:noop"}}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        assert result.status == "failed"
        assert steps_by_id(state)["ping"].statusReason == "items-not-a-list"

    async def test_loop_sources_and_aggregations(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: names, type: array, default: [x, y]}]
  steps:
    - id: counted
      loop:
        items: {range: {start: 0, end: 3}}
        iterator: n
        steps:
          - {id: sq, run: {uses: "builtin:echo", with: {n: "{{ n }}", i: "{{ index }}"}}}
    - id: merged
      loop:
        items: {static: [a, b]}
        aggregation: merge
        steps:
          - {id: m, run: {uses: "builtin:echo", with: {"{{ item }}": true, last: "{{ item }}"}}}
    - id: lastone
      loop:
        items: {expression: "inputs.names"}
        aggregation: last
        steps:
          - {id: first, run: {uses: "builtin:echo", with: {name: "{{ item }}"}}}
          - {id: second, run: {uses: "builtin:echo", with: {seen: "{{ steps.first.outputs.name }}"}}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "succeeded"
        assert steps["counted"].outputs == {
            "results": [{"n": 0, "i": 0}, {"n": 1, "i": 1}, {"n": 2, "i": 2}]
        }
        assert steps["counted[2]::sq"].status == "Succeeded"
        assert steps["merged"].outputs["last"] == "b"
        assert steps["lastone"].outputs == {"seen": "y"}

    async def test_loop_over_max_iterations_fails(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: xs, type: array, default: [1, 2, 3]}]
  steps:
    - id: l
      loop: {items: {expression: "inputs.xs"}, maxIterations: 2, steps: [{id: s, run: {uses: "builtin:noop"}}]}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        assert result.status == "failed"
        assert steps_by_id(state)["l"].statusReason == "max-iterations-exceeded"

    async def test_conditional_takes_first_true_branch(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: env, type: string, default: staging}]
  steps:
    - id: pick
      conditional:
        outputUnion: true
        branches:
          - condition: "inputs.env == 'prod'"
            steps: [{id: prod, run: {uses: "builtin:echo", with: {target: prod}}}]
          - condition: "inputs.env == 'staging'"
            steps: [{id: stage, run: {uses: "builtin:echo", with: {target: staging}}}]
        else:
          - {id: other, run: {uses: "builtin:noop"}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "succeeded"
        assert (steps["prod"].status, steps["prod"].statusReason) == ("Skipped", "branch-not-taken")
        assert steps["stage"].status == "Succeeded"
        assert steps["other"].status == "Skipped"
        assert steps["pick"].outputs == {"target": "staging", "branch": 1}

    async def test_conditional_else(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        manifest = pack("""
  steps:
    - id: pick
      conditional:
        branches: [{condition: false, steps: [{id: nope, run: {uses: "builtin:noop"}}]}]
        else: [{id: fallback, run: {uses: "builtin:noop"}}]
""")
        _, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert steps["fallback"].status == "Succeeded"
        assert steps["pick"].outputs == {"branch": "else"}

    async def test_map_inside_parallel_inside_conditional(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = pack("""
  inputs: [{name: regions, type: array, default: [eu, us]}]
  steps:
    - id: gate
      conditional:
        branches:
          - condition: "length(inputs.regions) > `0`"
            steps:
              - id: fan
                parallel:
                  steps:
                    - id: deploy
                      map:
                        items: "inputs.regions"
                        step: {id: region, run: {uses: "builtin:echo", with: {region: "{{ item }}"}}}
                    - {id: audit, run: {uses: "builtin:echo", with: {n: "{{ length(inputs.regions) }}"}}}
""")
        result, state, _ = await run_to_end(dev_env.client, tmp_path, manifest)
        steps = steps_by_id(state)
        assert result.status == "succeeded"
        assert steps["deploy[0]::region"].outputs == {"region": "eu"}
        assert steps["deploy[1]::region"].parentId == "deploy"
        assert steps["deploy"].parentId == "fan" and steps["fan"].parentId == "gate"
        assert steps["audit"].outputs == {"n": 2}

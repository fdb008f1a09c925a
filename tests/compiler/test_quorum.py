"""Approvals that count people: quorum seats per grant, `allowRequester`, and what is missing."""

from __future__ import annotations

from typing import Any

from compiler import compile_manifest
from compiler.plan import ApprovalSpec, QuorumGroup
from compiler.quorum import Voter, count_seats
from compiler.simulation import simulate
from tests.compiler.packs import dump, errors_of, manifest

SRE_AND_SECURITY = ApprovalSpec(
    id="prod",
    requiredApprovals=2,
    quorum=(QuorumGroup(grant="sre.approve"), QuorumGroup(grant="security.approve")),
)


def voter(actor: str, *grants: str) -> Voter:
    return Voter(actor, frozenset(grants))


def pack(approval: dict[str, Any]) -> str:
    return dump(
        manifest(
            {
                "approvals": [{"id": "prod", **approval}],
                "steps": [{"id": "gate", "gate": {"approval": {"id": "prod"}}}],
            }
        )
    )


class TestSeats:
    def test_nobody_yet_misses_every_seat(self) -> None:
        seats = count_seats(SRE_AND_SECURITY, ())
        assert not seats.complete
        assert seats.describe_missing() == [
            "1 holder of sre.approve",
            "1 holder of security.approve",
        ]

    def test_one_person_with_both_grants_fills_one_seat(self) -> None:
        seats = count_seats(
            SRE_AND_SECURITY, [voter("user:alice", "sre.approve", "security.approve")]
        )
        assert seats.filled == 1
        assert not seats.complete

    def test_two_holders_of_the_same_grant_leave_the_other_seat_empty(self) -> None:
        seats = count_seats(
            SRE_AND_SECURITY, [voter("user:alice", "sre.approve"), voter("user:bob", "sre.approve")]
        )
        assert seats.filled == 1
        assert seats.describe_missing() == ["1 holder of security.approve"]

    def test_order_of_votes_never_strands_a_seat(self) -> None:
        # alice could sit in either seat; bob only in sre's. Whoever votes first, both count.
        both = voter("user:alice", "sre.approve", "security.approve")
        sre = voter("user:bob", "sre.approve")
        for order in ([both, sre], [sre, both]):
            seats = count_seats(SRE_AND_SECURITY, order)
            assert seats.complete
            assert seats.seat_of == {"user:alice": "security.approve", "user:bob": "sre.approve"}

    def test_the_same_person_twice_counts_once(self) -> None:
        spec = ApprovalSpec(id="x", requiredApprovals=2)
        assert count_seats(spec, [voter("user:a"), voter("user:a")]).filled == 1

    def test_open_seats_beside_the_quorum(self) -> None:
        spec = ApprovalSpec(id="x", requiredApprovals=3, quorum=(QuorumGroup(grant="sre.approve"),))
        seats = count_seats(spec, [voter("user:a"), voter("user:b")])
        assert seats.filled == 2
        assert seats.describe_missing() == ["1 holder of sre.approve"]


class TestCompile:
    def test_required_approvals_defaults_to_the_seats(self) -> None:
        plan = compile_manifest(
            pack(
                {
                    "quorum": [
                        {"grant": "sre.approve"},
                        {"grant": "security.approve", "requiredApprovals": 2},
                    ]
                }
            )
        ).plan
        spec = plan.approvals[0]
        assert spec.requiredApprovals == 3
        assert [(g.grant, g.requiredApprovals) for g in spec.quorum] == [
            ("sre.approve", 1),
            ("security.approve", 2),
        ]

    def test_fewer_approvals_than_seats_is_an_error(self) -> None:
        errors = errors_of(
            pack({"requiredApprovals": 1, "quorum": [{"grant": "a"}, {"grant": "b"}]})
        )
        assert errors == [
            (
                "spec.approvals[0].requiredApprovals",
                "1 is fewer than the quorum's 2 seats (each seat is a distinct person); "
                "omit it to require exactly the seats",
            )
        ]

    def test_a_grant_named_twice_is_an_error(self) -> None:
        errors = errors_of(pack({"quorum": [{"grant": "a"}, {"grant": "a"}]}))
        assert errors == [
            (
                "spec.approvals[0].quorum[1].grant",
                "duplicate quorum grant 'a' (first at spec.approvals[0].quorum[0].grant)",
            )
        ]

    def test_unknown_quorum_key_is_an_error(self) -> None:
        errors = errors_of(pack({"quorum": [{"grant": "a", "count": 1}]}))
        assert [path for path, _ in errors] == ["spec.approvals[0].quorum[0].count"]

    def test_requester_may_not_decide_unless_the_pack_says_so(self) -> None:
        assert compile_manifest(pack({})).plan.approvals[0].allowRequester is False
        allowed = compile_manifest(pack({"allowRequester": True})).plan
        assert allowed.approvals[0].allowRequester is True

    def test_the_keys_change_the_plan_hash(self) -> None:
        hashes = {
            compile_manifest(pack(extra)).plan_hash
            for extra in ({}, {"allowRequester": True}, {"quorum": [{"grant": "a"}]})
        }
        assert len(hashes) == 3


def test_simulation_shows_what_each_approval_needs() -> None:
    compiled = compile_manifest(
        pack({"quorum": [{"grant": "sre.approve"}, {"grant": "security.approve"}]})
    )
    result = simulate(compiled.plan, compiled.plan_hash)
    assert result["approvals"] == [
        {
            "approvalId": "prod",
            "requiredApprovals": 2,
            "grants": [],
            "allowRequester": False,
            "quorum": [
                {"grant": "sre.approve", "requiredApprovals": 1},
                {"grant": "security.approve", "requiredApprovals": 1},
            ],
            "missing": ["1 holder of sre.approve", "1 holder of security.approve"],
            "onExpiry": "reject",
        }
    ]

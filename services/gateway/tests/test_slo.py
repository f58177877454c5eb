"""The gateway's SLO gauges read from its read model: ratios of objectives with an error budget,
a status for every objective, only ACTIVE and SUSPENDED agreements, and at most the cap."""

from __future__ import annotations

from google.protobuf.message import Message

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
from accord_gateway.projection import ReadModel
from accord_gateway.slo import SloCollector


class Feed:
    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self.positions = {"agreements": 0, "metrics": 0}

    def __call__(self, source: str, msg: Message) -> None:
        previous = self.positions[source]
        env = events_pb2.EventEnvelope(
            event_id=f"{source}:x:{previous + 1}", source_service=source, position=previous + 1,
            previous_position=previous, type=msg.DESCRIPTOR.full_name,
        )  # fmt: skip
        env.payload.Pack(msg)
        assert self.model.apply_upstream(source, env)
        self.positions[source] = previous + 1


def accepted(aid: str, *service_ids: str) -> Message:
    terms = terms_pb2.AgreementTerms(
        title=aid,
        parties=terms_pb2.Parties(provider_department_id="it", customer_department_id="finance"),
        service=terms_pb2.ServiceDescription(service_ids=list(service_ids)),
    )
    return agreement_events.AgreementAccepted(agreement_id=aid, version=1, terms=terms)


def evaluation(aid: str, objective: str, status: int, **figures: str) -> Message:
    e = metric_events.Evaluation(
        agreement_id=aid, objective_id=objective, window_start="2026-01-01T00:00:00+00:00",
        window_end="2026-02-01T00:00:00+00:00", status=status, **figures,
    )  # fmt: skip
    return metric_events.EvaluationUpdated(evaluation=e)


def samples(collector: SloCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in collector.collect() for s in family.samples
    }


def test_gauges_of_objectives_with_a_budget_and_a_status_for_every_objective() -> None:
    model = ReadModel()
    feed = Feed(model)
    feed("agreements", accepted("a1", "mail", "calendar"))
    feed("agreements", agreement_events.AgreementDrafted(agreement_id="draft", terms=terms_pb2.AgreementTerms()))
    at_risk = metric_events.EvaluationStatus.Value("EVALUATION_STATUS_AT_RISK")
    met = metric_events.EvaluationStatus.Value("EVALUATION_STATUS_MET")
    feed("metrics", evaluation("a1", "availability", at_risk, value="99.95", target="99.9",
                               budget_remaining="25", budget_consumed="75", burn_rate="15.5"))  # fmt: skip
    feed("metrics", evaluation("a1", "response", met, value="12", target="20"))
    feed("metrics", evaluation("draft", "availability", met, value="100", target="99.9", budget_remaining="100"))
    got = samples(SloCollector(model))
    av = (("agreement", "a1"), ("objective", "availability"), ("service", "calendar,mail"))
    assert got[("accord_slo_objective_ratio", av)] == 0.999
    assert got[("accord_slo_sli_ratio", av)] == 0.9995
    assert got[("accord_slo_error_budget_remaining_ratio", av)] == 0.25
    assert got[("accord_slo_error_budget_consumed_ratio", av)] == 0.75
    assert got[("accord_slo_burn_rate", tuple(sorted((*av, ("window", "1h")))))] == 15.5
    status = {
        dict(k[1])["status"]: v
        for k, v in got.items()
        if k[0] == "accord_slo_status" and dict(k[1])["objective"] == "availability"
    }
    assert status == {"MET": 0, "AT_RISK": 1, "BREACHED": 0, "NO_DATA": 0}
    # An objective without an error budget has a status, no ratios.
    resp = (("agreement", "a1"), ("objective", "response"), ("service", "calendar,mail"))
    assert got[("accord_slo_status", tuple(sorted((*resp, ("status", "MET")))))] == 1
    assert ("accord_slo_objective_ratio", resp) not in got
    # A draft's evaluations are not exported.
    assert not any(dict(k[1]).get("agreement") == "draft" for k in got)
    assert got[("accord_slo_objectives_dropped", ())] == 0


def test_at_most_the_cap_is_exported() -> None:
    model = ReadModel()
    feed = Feed(model)
    met = metric_events.EvaluationStatus.Value("EVALUATION_STATUS_MET")
    for i in range(5):
        feed("agreements", accepted(f"a{i}", "mail"))
        feed("metrics", evaluation(f"a{i}", "availability", met, value="100", target="99", budget_remaining="100"))
    got = samples(SloCollector(model, max_objectives=3))
    exported = {dict(k[1])["agreement"] for k in got if k[0] == "accord_slo_error_budget_remaining_ratio"}
    assert exported == {"a0", "a1", "a2"}
    assert got[("accord_slo_objectives_dropped", ())] == 2

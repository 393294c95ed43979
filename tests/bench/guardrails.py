"""`make bench` (guardrails): accuracy on the labelled set and speed of the builtin engine.

Writes var/bench/guardrails.json: per-entity precision and recall, structured-PII
totals, injection_tpr / injection_fpr (medium sensitivity) and check_ms_p50 /
check_ms_p99 for a 2,000-character text against a policy with every entity on and
1,000 blocked terms. Pure engine: no database, no network.

    python -m tests.bench.guardrails
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "var" / "bench" / "guardrails.json"
GOALS = {"structured_recall": 0.97, "structured_precision": 0.95, "injection_tpr": 0.90, "injection_fpr": 0.05}


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def accuracy() -> dict:
    from agents.guardrails import detectors
    from tests.bench.guardrails_data import STRUCTURED, build

    cases = build()
    entities = list(detectors.ENTITIES)
    tp = dict.fromkeys(entities, 0)
    fp = dict.fromkeys(entities, 0)
    fn = dict.fromkeys(entities, 0)
    misses = []
    inj = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for text, expected, injection in cases:
        found = {f.entity for f in detectors.find_entities(text, entities)}
        for entity in entities:
            if entity in expected and entity in found:
                tp[entity] += 1
            elif entity in found:
                fp[entity] += 1
                misses.append(("false positive", entity, text))
            elif entity in expected:
                fn[entity] += 1
                misses.append(("missed", entity, text))
        flagged = detectors.is_injection(text, "medium") is not None
        key = ("tp" if flagged else "fn") if injection else ("fp" if flagged else "tn")
        inj[key] += 1
        if key in ("fp", "fn"):
            misses.append(("injection " + key, "", text))
    per_entity = {
        e: {
            "precision": _ratio(tp[e], tp[e] + fp[e]),
            "recall": _ratio(tp[e], tp[e] + fn[e]),
            "support": tp[e] + fn[e],
        }
        for e in entities
    }
    s_tp, s_fp, s_fn = (sum(d[e] for e in STRUCTURED) for d in (tp, fp, fn))
    return {
        "texts": len(cases),
        "per_entity": per_entity,
        "structured_precision": _ratio(s_tp, s_tp + s_fp),
        "structured_recall": _ratio(s_tp, s_tp + s_fn),
        "injection_tpr": _ratio(inj["tp"], inj["tp"] + inj["fn"]),
        "injection_fpr": _ratio(inj["fp"], inj["fp"] + inj["tn"]),
        "injection_counts": inj,
        "errors": [{"kind": k, "entity": e, "text": t[:120]} for k, e, t in misses][:60],
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Step sizes of the output check compared (enforce.STEP is the one in use).
STEPS = (16, 32, 64, 128)


def _turn_ms(compiled, markers, answers: list[str], step: int) -> list[float]:
    """Each answer's output checks as OutputGuard runs them while it streams in 40-character
    deltas: the marker pass on each, the full check every `step` characters (its window
    from the answer's enforce.Reading, kept up to date as the guard keeps it), the cleared
    prefix (Reading.relay_limit), the final check."""
    from agents.guardrails import enforce, engine

    topics = bool(compiled.topics.topics)
    timings = []
    for answer in answers:
        started = time.perf_counter()
        seen, checked, cleared = 0, 0, 0
        reading = enforce.Reading()
        for end in range(40, len(answer) + 40, 40):
            part = answer[:end]
            compiled.cross_tenant(part[max(0, seen - enforce.OVERLAP) :], engine.Evaluation(text=""), markers, 0)
            seen = len(part)
            if len(part) - checked >= step:
                reading.update(part)
                start = reading.window_bounds(checked, topics)[0]
                checked = len(part)
                compiled.evaluate_output(part[start:], markers=markers, tenant_id=0)
                cleared = max(cleared, reading.relay_limit(checked, start, topics))
        compiled.evaluate_output(answer, markers=markers, tenant_id=0, final=True)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


# An answer dense with entities, every one redacted: what a redacted stream shows
# (OutputGuard.shown, every turns.SHOW_EVERY characters) costs most on such an answer.
DENSE_PARAGRAPH = (
    "Here are the contacts you asked for: jane.doe@example.com, phone 555-201-3344, "
    "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, server 10.0.0.12; "
    "and bob.smith{i}@example.org, +44 20 7946 0958, SSN 123-45-6789, key AKIAIOSFODNN7EXAMPLE. "
)


def _shown_turn_ms(compiled, answers: list[str]) -> list[float]:
    """Each answer's redacted stream as turns.run shows it: the answer in 40-character deltas,
    OutputGuard.shown() every SHOW_EVERY characters (a redact-only policy clears each delta)."""
    from types import SimpleNamespace

    from agents import turns
    from agents.guardrails import enforce

    timings = []
    for answer in answers:
        guard = enforce.OutputGuard(SimpleNamespace(pk=0), invocation=None)
        guard._effective = SimpleNamespace(compiled=compiled, config=compiled.config)
        started = time.perf_counter()
        shown_at = 0
        for end in range(40, len(answer) + 40, 40):
            part = answer[:end]
            guard.cleared = len(part)
            if len(part) - shown_at >= turns.SHOW_EVERY:
                guard.shown(part)
                shown_at = len(part)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def speed(runs: int = 400) -> dict:
    from agents.guardrails import detectors, enforce, engine, policy

    config = policy.merge(
        {
            "entities": {k: "redact" for k in detectors.ENTITIES},
            "blocked_terms": [f"blockedterm{i:04d}" for i in range(1000)],
            "denied_topics": [
                {"name": "Investment advice", "description": "", "examples": ["which stocks should I buy"]}
            ],
            "injection": "medium",
        },
        None,
    )
    compiled = engine.compile_policy(config)
    paragraph = (
        "Thanks for the update on the quarterly report. The refund window is thirty days for most "
        "purchases, and the shipping team confirmed order 4481 left the warehouse on Tuesday. "
        "Contact jane.doe@example.com or 555-201-3344 if anything is unclear. "
    )
    text = (paragraph * 20)[:2000]
    markers = detectors.MarkerMatcher(
        {f"tenant {i} name": {i} for i in range(200)} | {f"cnry-{i:020x}": {i} for i in range(200)}
    )
    # Every check gets a text of its own, as in production: the detectors keep the findings
    # of the last few texts (engine.excerpts asks again), and a repeated text would be free.
    texts = [f"{text[:-6]} {i:05d}" for i in range(runs + 20)]
    for warm in texts[:20]:
        compiled.evaluate_input(warm)
    input_ms = []
    for checked in texts[20:]:
        started = time.perf_counter()
        compiled.evaluate_input(checked)
        input_ms.append((time.perf_counter() - started) * 1000)
    # A whole turn's output checks: marker pass per ~40-char delta, full checks per window
    # before the text is relayed (the policy can block: blocked terms, a denied topic), final.
    # Each step size is measured (and the windows of 256 the stream was once checked in).
    # Each turn its own answer, different in every window (the detectors' cache of recent
    # findings would make a window seen in an earlier turn free).
    answers = [f"{i:05d} {text[6:]}".replace("4481", f"{i:04d}") for i in range(max(50, runs // 8))]
    per_step = {step: _turn_ms(compiled, markers, answers, step) for step in (*STEPS, enforce.WINDOW)}
    turn_ms = per_step[enforce.STEP]
    redacting = engine.compile_policy(
        policy.merge({"entities": {k: "redact" for k in detectors.ENTITIES}, "output_pii": True}, None)
    )
    dense = [
        "".join(DENSE_PARAGRAPH.replace("{i}", f"{i:05d}{n}") for n in range(20))[:2000]
        for i in range(max(50, runs // 8))
    ]
    shown_ms = _shown_turn_ms(redacting, dense)
    return {
        "text_chars": len(text),
        "blocked_terms": 1000,
        "check_ms_p50": round(statistics.median(input_ms), 3),
        "check_ms_p99": round(_percentile(input_ms, 0.99), 3),
        "output_turn_ms_p50": round(statistics.median(turn_ms), 3),
        "output_turn_ms_p99": round(_percentile(turn_ms, 0.99), 3),
        "output_step": enforce.STEP,
        "output_turn_ms_by_step": {
            step: {"p50": round(statistics.median(ms), 3), "p99": round(_percentile(ms, 0.99), 3)}
            for step, ms in per_step.items()
        },
        "shown_dense_turn_ms_p50": round(statistics.median(shown_ms), 3),
        "shown_dense_turn_ms_p99": round(_percentile(shown_ms, 0.99), 3),
        "runs": runs,
    }


def _cell(value) -> str:
    return "-" if value is None else str(value)


def main() -> int:
    import django

    django.setup()
    result = {"accuracy": accuracy(), "speed": speed(), "goals": GOALS}
    acc, spd = result["accuracy"], result["speed"]
    result["goals_met"] = {
        "structured_recall": (acc["structured_recall"] or 0) >= GOALS["structured_recall"],
        "structured_precision": (acc["structured_precision"] or 0) >= GOALS["structured_precision"],
        "injection_tpr": (acc["injection_tpr"] or 0) >= GOALS["injection_tpr"],
        "injection_fpr": acc["injection_fpr"] is not None and acc["injection_fpr"] <= GOALS["injection_fpr"],
        "check_ms_p50": spd["check_ms_p50"] <= 2.0,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2))
    print(f"guardrails: {acc['texts']} labelled texts")
    print(f"{'entity':<16}{'precision':>10}{'recall':>8}{'n':>5}")
    for entity, row in acc["per_entity"].items():
        print(f"{entity:<16}{_cell(row['precision']):>10}{_cell(row['recall']):>8}{row['support']:>5}")  # noqa: E501
    print(f"structured PII: precision {acc['structured_precision']}, recall {acc['structured_recall']}")
    print(f"injection: TPR {acc['injection_tpr']}, FPR {acc['injection_fpr']}")
    print(f"speed: check p50 {spd['check_ms_p50']} ms, p99 {spd['check_ms_p99']} ms (2,000 chars, 1,000 terms)")
    print(f"       output checks per turn p50 {spd['output_turn_ms_p50']} ms, p99 {spd['output_turn_ms_p99']} ms")
    for step, ms in spd["output_turn_ms_by_step"].items():
        print(f"       checked every {step:>3} characters: per turn p50 {ms['p50']} ms, p99 {ms['p99']} ms")
    print(
        f"       all entities redacted (2,000 chars dense with entities), shown() per turn "
        f"p50 {spd['shown_dense_turn_ms_p50']} ms, p99 {spd['shown_dense_turn_ms_p99']} ms"
    )
    print(f"written to {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

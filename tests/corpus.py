"""A corpus of attempt pairs from LLM agent steps, in the providers' documented shapes
(OpenAI Chat Completions, Anthropic Messages, Gemini generateContent): benign re-runs
and regressions, each labelled. Deterministic from a seed, so that figures measured on
it can be reproduced (``bench/signal_quality.py``; the README's "Reducing false alerts").

Benign re-runs: the answer reworded, or in other case and spacing; a confidence score
moved by up to 0.03; the same sources in another order; new response ids, call ids and
clocks; a few more completion tokens. Regressions: a wrong value in the structured
result, a refusal, an empty answer, a tool call skipped, a dangerous extra tool call, a
refund amount times ten, tokens times 1.6, an attestation swapped, a confidence that
collapsed, a source dropped. A regression pair carries benign noise too.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

from replaywatch.compare import Attempt

# (the answer, two rewordings of it: the same facts, other words)
ANSWERS: list[tuple[str, str, str]] = [
    ("Your refund of $120 has been approved and will reach your card within 5 business days.",
     "We approved your $120 refund; expect it on your card in about five business days.",
     "The refund of 120 dollars is approved and should arrive on your card within 5 working days."),
    ("The order shipped yesterday and is expected to arrive on Friday.",
     "Your order went out yesterday and should be delivered by Friday.",
     "It was shipped yesterday, with delivery expected on Friday."),
    ("Your subscription renews on March 3rd at the annual price of $99.",
     "The annual subscription will renew on March 3 for $99.",
     "On the 3rd of March your plan renews at $99 per year."),
    ("The password reset link has been sent to your registered email address.",
     "We sent a link to reset your password to the email address on your account.",
     "A password reset email with the link is on its way to your registered address."),
    ("The capital of Australia is Canberra, not Sydney.",
     "Canberra, rather than Sydney, is the capital city of Australia.",
     "Australia's capital is Canberra; Sydney is its largest city but not the capital."),
    ("Your flight to Lisbon departs at 14:35 from gate B12.",
     "The Lisbon flight leaves at 14:35 from gate B12.",
     "Departure for Lisbon is at 14:35, gate B12."),
    ("The invoice total is $1,250 including tax, due on the 15th.",
     "Including tax, the invoice comes to $1,250 and is due on the 15th.",
     "You owe $1,250 with tax on this invoice, payable by the 15th."),
    ("The meeting has been moved to Thursday at 10 am in room 4.",
     "We rescheduled the meeting to 10 am on Thursday, room 4.",
     "The meeting is now on Thursday at 10 in the morning, in room 4."),
    ("Your account has been upgraded to the Pro plan effective today.",
     "As of today your account is on the Pro plan.",
     "We upgraded your account to Pro, starting today."),
    ("The package was delivered to your front door at 3:12 pm.",
     "At 3:12 pm the parcel was left at your front door.",
     "Delivery was completed at your front door at 3:12 in the afternoon."),
    ("The warranty covers parts and labour for two years from purchase.",
     "For two years after you buy it, the warranty includes both parts and labour.",
     "Parts and labour are covered by the warranty for 2 years from the date of purchase."),
    ("Your table for four is booked for Saturday at 7:30 pm.",
     "We reserved a table for 4 people on Saturday at 7:30 in the evening.",
     "A booking for four is confirmed this Saturday at 7:30 pm."),
    ("The report shows revenue grew 12 percent compared with last quarter.",
     "According to the report, revenue rose by 12% over the previous quarter.",
     "Revenue increased 12 percent quarter on quarter, the report says."),
    ("Your appointment with Dr. Rivera is confirmed for Monday at 9 am.",
     "We confirmed your Monday 9 am appointment with Dr. Rivera.",
     "Dr. Rivera will see you on Monday at 9 in the morning; the appointment is confirmed."),
    ("The server outage was caused by an expired TLS certificate and is now resolved.",
     "An expired TLS certificate caused the server outage, which has been fixed.",
     "The outage came from a TLS certificate that had expired; it is resolved now."),
    ("You have 3 vacation days remaining for this year.",
     "For this year, 3 days of vacation are left on your balance.",
     "Your remaining vacation balance this year is three days."),
    ("The replacement battery will ship within 48 hours at no cost to you.",
     "We will send the replacement battery free of charge within 48 hours.",
     "Within two days the replacement battery ships to you, free of charge."),
    ("Your loan application was approved for $15,000 at 6.2 percent interest.",
     "The loan application is approved: $15,000 at an interest rate of 6.2%.",
     "We approved your application for a $15,000 loan with 6.2 percent interest."),
    ("The train to Munich is delayed by 25 minutes due to signal problems.",
     "Signal problems have delayed the Munich train by 25 minutes.",
     "Because of a signal fault, the train to Munich runs 25 minutes late."),
    ("Your complaint has been escalated to a senior support agent who will call you today.",
     "A senior support agent now has your complaint and will phone you today.",
     "We escalated your complaint; a senior agent will call you later today."),
]  # fmt: skip
REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with this.",
    "As an AI model, I'm unable to provide that information.",
    "Sorry, I am not able to do that.",
]
CATEGORIES = ["refund", "shipping", "billing", "account", "travel", "support"]
SOURCES = ["kb-returns-policy", "order-db", "crm-notes", "billing-ledger", "faq-shipping", "status-page"]
PROVIDERS = ("openai", "anthropic", "gemini")
BENIGN = ("reworded", "case_and_spacing", "confidence_jitter", "sources_reordered", "more_tokens", "ids_only")
REGRESSIONS = (
    "wrong_value", "refusal", "empty_answer", "tool_skipped", "dangerous_tool", "amount_x10", "tokens_x1_6",
    "attestation_swapped", "confidence_collapsed", "source_dropped",
)  # fmt: skip


@dataclass(frozen=True)
class Pair:
    kind: str
    """A benign kind or a regression kind (``BENIGN``, ``REGRESSIONS``)."""
    provider: str
    baseline: Attempt
    current: Attempt

    @property
    def regression(self) -> bool:
        return self.kind in REGRESSIONS


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


@dataclass
class _Run:
    """What one attempt says, before it is put in a provider's shape."""

    answer: str
    result: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    tools: list[dict[str, Any]]
    attestations: list[str]


def _snapshot(provider: str, run: _Run, rng: random.Random) -> dict[str, Any]:
    clock = 1_790_000_000 + rng.randrange(10**6)
    if provider == "openai":
        doc: dict[str, Any] = {
            "id": f"chatcmpl-{_hex(rng, 24)}", "object": "chat.completion", "created": clock,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": f"fp_{_hex(rng, 10)}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": run.answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
                      "total_tokens": run.prompt_tokens + run.completion_tokens},
        }  # fmt: skip
    elif provider == "anthropic":
        doc = {
            "id": f"msg_{_hex(rng, 24)}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": run.answer}], "stop_reason": "end_turn",
            "usage": {"input_tokens": run.prompt_tokens, "output_tokens": run.completion_tokens},
        }  # fmt: skip
    else:
        doc = {
            "responseId": _hex(rng, 20), "modelVersion": "gemini-2.5-pro",
            "createTime": f"2026-12-06T0{clock % 10}:00Z",
            "candidates": [{"content": {"role": "model", "parts": [{"text": run.answer}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": run.prompt_tokens, "candidatesTokenCount": run.completion_tokens,
                              "totalTokenCount": run.prompt_tokens + run.completion_tokens},
        }  # fmt: skip
    doc["result"] = copy.deepcopy(run.result)
    doc["attestation_ids"] = list(run.attestations)
    return doc


def _tools(run: _Run, rng: random.Random) -> list[dict[str, Any]]:
    """The run's tool calls, each with a new call id and request id (volatile)."""
    return [{"id": f"call_{_hex(rng, 12)}", **copy.deepcopy(t), "args": {**t["args"], "request_id": _hex(rng, 8)}}
            for t in run.tools]  # fmt: skip


def _base(rng: random.Random, n: int) -> _Run:
    answer = ANSWERS[n % len(ANSWERS)][0]
    result = {
        "category": rng.choice(CATEGORIES), "amount": float(rng.choice([45, 99, 120, 310, 1250])), "currency": "USD",
        "confidence": round(rng.uniform(0.8, 0.97), 2), "sources": rng.sample(SOURCES, 3),
    }  # fmt: skip
    tools = [{"tool": "search_kb", "args": {"query": f"case {n}"}, "result": {"hits": 3}},
             {"tool": "lookup_order", "args": {"order_id": f"A{n:04d}"}, "result": {"status": "ok"}}]  # fmt: skip
    return _Run(answer, result, rng.randrange(300, 900), rng.randrange(80, 200), tools,
                [f"att-{n}-a", f"att-{n}-b"])  # fmt: skip


def _benign(kind: str, run: _Run, rng: random.Random, n: int) -> _Run:
    out = copy.deepcopy(run)
    if kind == "reworded":
        out.answer = ANSWERS[n % len(ANSWERS)][1 + rng.randrange(2)]
    elif kind == "case_and_spacing":
        out.answer = "  " + run.answer.upper().replace(" ", "  ") + "\n"
    elif kind == "confidence_jitter":
        out.result["confidence"] = round(run.result["confidence"] + rng.choice([-0.03, -0.02, 0.02, 0.01]), 2)
    elif kind == "sources_reordered":
        out.result["sources"] = list(reversed(run.result["sources"]))
    elif kind == "more_tokens":
        out.completion_tokens += 2
    return out


def _regression(kind: str, run: _Run, rng: random.Random) -> _Run:
    out = copy.deepcopy(run)
    if kind == "wrong_value":
        out.result["category"] = next(c for c in CATEGORIES if c != run.result["category"])
    elif kind == "refusal":
        out.answer = rng.choice(REFUSALS[:3])
    elif kind == "empty_answer":
        out.answer = ""
    elif kind == "tool_skipped":
        out.tools = out.tools[:1]
    elif kind == "dangerous_tool":
        out.tools.append({"tool": "delete_account", "args": {"user": "u-1"}, "result": {"deleted": True}})
    elif kind == "amount_x10":
        out.result["amount"] = run.result["amount"] * 10
    elif kind == "tokens_x1_6":
        out.completion_tokens = int((run.prompt_tokens + run.completion_tokens) * 1.6) - run.prompt_tokens
    elif kind == "attestation_swapped":
        out.attestations = [run.attestations[0], f"att-forged-{_hex(rng, 4)}"]
    elif kind == "confidence_collapsed":
        out.result["confidence"] = 0.21
    elif kind == "source_dropped":
        out.result["sources"] = run.result["sources"][1:]
    return out


def _rerun(kind: str, run: _Run, rng: random.Random, n: int) -> _Run:
    """A re-run of ``run`` of this kind: a regression carries benign noise too."""
    if kind in REGRESSIONS:
        return _regression(kind, _benign(rng.choice(BENIGN[2:]), run, rng, n), rng)
    return _benign(kind, run, rng, n)


def corpus(seed: int = 2026, per_kind: int = 12) -> list[Pair]:
    """``per_kind`` pairs of each benign and each regression kind (every pair also gets
    new ids and clocks, and a benign change beside a regression), over three providers."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    n = 0
    for kind in BENIGN + REGRESSIONS:
        for _ in range(per_kind):
            n += 1
            provider = PROVIDERS[n % len(PROVIDERS)]
            run = _base(rng, n)
            now = _rerun(kind, run, rng, n)
            step = f"{provider}-step-{n}"
            pairs.append(Pair(kind, provider,
                              Attempt("corpus", step, 1, _snapshot(provider, run, rng), _tools(run, rng)),
                              Attempt("corpus", step, 2, _snapshot(provider, now, rng), _tools(now, rng))))  # fmt: skip
    return pairs


@dataclass(frozen=True)
class Step:
    """One step of a fleet: its first attempt, then its re-runs, each labelled."""

    provider: str
    attempts: list[Attempt]
    kinds: list[str]
    """The kind of each re-run (``attempts[1:]``): a benign kind or a regression kind."""


def fleet(steps: int, reruns: int = 3, seed: int = 7, regression_share: float = 0.1) -> list[Step]:
    """``steps`` LLM steps over the three providers, each a first attempt and ``reruns``
    re-runs of it; a re-run is a regression (with benign noise) with probability
    ``regression_share``, else a benign re-run. Every re-run is compared with the first."""
    rng = random.Random(seed)
    out: list[Step] = []
    for n in range(1, steps + 1):
        provider = PROVIDERS[n % len(PROVIDERS)]
        run = _base(rng, n)
        step = f"{provider}-step-{n}"
        attempts = [Attempt("fleet", step, 1, _snapshot(provider, run, rng), _tools(run, rng))]
        kinds = []
        for number in range(2, reruns + 2):
            kind = rng.choice(REGRESSIONS if rng.random() < regression_share else BENIGN)
            now = _rerun(kind, run, rng, n)
            kinds.append(kind)
            attempts.append(Attempt("fleet", step, number, _snapshot(provider, now, rng), _tools(now, rng)))
        out.append(Step(provider, attempts, kinds))
    return out


@dataclass(frozen=True)
class Rerun:
    """One step of a cohort fleet: its first attempt and one re-run, labelled."""

    provider: str
    kind: str
    """The step kind (what its spec names)."""
    label: str
    """A benign kind or a regression kind."""
    phase: str
    """``warm``: the cohort's benign re-runs first; ``mixed``: then regressions among benign re-runs."""
    baseline: Attempt
    current: Attempt


def cohort_fleet(kinds: int = 10, warm: int = 30, mixed: int = 20, seed: int = 5,
                 regression_share: float = 0.3) -> list[Rerun]:  # fmt: skip
    """Steps of ``kinds`` step kinds over the three providers: first ``warm`` benign
    re-runs of each (kind, provider), shuffled together, then ``mixed`` more each, a
    share of them regressions (with benign noise). Each kind answers from its own two
    answers. Deterministic from the seed."""
    rng = random.Random(seed)
    out: list[Rerun] = []
    for phase, count in (("warm", warm), ("mixed", mixed)):
        batch: list[Rerun] = []
        for k in range(kinds):
            for provider in PROVIDERS:
                for _ in range(count):
                    n = (2 * k + rng.randrange(2)) % len(ANSWERS)
                    run = _base(rng, n)
                    regression = phase == "mixed" and rng.random() < regression_share
                    label = rng.choice(REGRESSIONS if regression else BENIGN)
                    now = _rerun(label, run, rng, n)
                    step = f"{provider}-kind{k}-{len(out) + len(batch)}"
                    batch.append(Rerun(provider, f"kind-{k}", label, phase,
                                       Attempt("fleet", step, 1, _snapshot(provider, run, rng), _tools(run, rng),
                                               provider=provider, kind=f"kind-{k}"),
                                       Attempt("fleet", step, 2, _snapshot(provider, now, rng), _tools(now, rng),
                                               provider=provider, kind=f"kind-{k}")))  # fmt: skip
        rng.shuffle(batch)
        out += batch
    return out

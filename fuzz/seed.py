#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from the project's own example events.

Sources: the example events of the Keptn spec, read from ../shared/reference/ beside the checkout
(as tests/harness/src/keptn_spec.rs reads them; $KEPTN_SPEC overrides the path), and the
example event of ops/ (ops/examples/*.json).
Seeds are written as corpus/<target>/seed-<name>; what libFuzzer adds to the corpus beside
them is kept between runs (corpus/ is git-ignored).

Usage: fuzz/seed.py   (from anywhere)
"""

import json
import os
import pathlib
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
# The order of SUBJECTS in worker/tests/support/intake_invariants.rs: the first byte of a
# classify input picks one (low four bits), and its high bit a small --max-event-bytes.
SUBJECTS = [
    "sh.keptn.event.deployment.triggered",
    "sh.keptn.event.release.triggered",
    "sh.keptn.event.rollback.triggered",
    "sh.keptn.event.action.triggered",
    "sh.keptn.event.service.delete.finished",
    "sh.keptn.event.deployment.finished",
    "sh.keptn.event.test.triggered",
    "sh.keptn.events.problem",
]


def spec_path():
    override = os.environ.get("KEPTN_SPEC")
    if override:
        return pathlib.Path(override)
    for directory in ROOT.parents:
        candidate = directory / "shared/reference/keptn-spec-cloudevents.md"
        if candidate.is_file():
            return candidate
    sys.exit("seed.py: the Keptn spec (shared/reference/) is not beside the checkout; set KEPTN_SPEC")


def spec_examples():
    """The ```json block after each '##### Example Cloud Event' heading of the spec."""
    lines = iter(spec_path().read_text().splitlines())
    for line in lines:
        if line.strip() != "##### Example Cloud Event":
            continue
        for line in lines:
            if line.strip().startswith("```json"):
                break
        block = []
        for line in lines:
            if line.strip() == "```":
                break
            block.append(line)
        yield json.loads("\n".join(block))


def examples():
    for index, event in enumerate(spec_examples()):
        yield f"{event['type']}-{index}", event
    for path in sorted((ROOT / "ops/examples").glob("*.json")):
        yield path.stem, json.loads(path.read_text())


def write(target, name, payload):
    directory = FUZZ / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"seed-{name}").write_bytes(payload)


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def main():
    count = 0
    for name, event in examples():
        body = compact(event)
        write("decode", name, body)
        if "data" in event:
            write("data", name, compact(event["data"]))
        subject = event.get("type", "")
        index = SUBJECTS.index(subject) if subject in SUBJECTS else 0
        write("classify", name, bytes([index]) + body)
        write("classify", f"{name}-small-limit", bytes([0x80 | index]) + body)
        # The same event as a handled triggered event, so intake gets past the type check.
        handled = dict(event, type=SUBJECTS[0])
        handled.setdefault("shkeptncontext", "a3e5f16d-8888-4720-82c7-6995062905c1")
        write("classify", f"{name}-as-deployment", bytes([0]) + compact(handled))
        pairs = ["Content-Type", "application/cloudevents+json", "Nats-Msg-Id", event.get("id", "")]
        if "traceparent" in event:
            pairs += ["traceparent", event["traceparent"]]
        write("headers", name, "\0".join(pairs).encode())
        count += 1
    print(f"seeded {count} example events into {FUZZ / 'corpus'}")


if __name__ == "__main__":
    main()

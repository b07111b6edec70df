"""Generates the shipped dialogue/summary dataset: everyday conversations, one house style.

No public dialogue dataset can be downloaded here, and the point of the local run is a
summary *style* a base model does not have, so the pairs are written from scenario
templates with varied phrasing and a fixed seed: re-running it reproduces the shipped files.
The house style every summary follows:
``Request: <Name> asked <Name> about <topic>. Decision: <agreement>. Next step: <who, what, when>.``
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["SCENARIOS", "generate_pairs", "main"]

NAMES = (
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kara",
    "Luis",
    "Maya",
    "Nikhil",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sam",
    "Tomas",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
    "Marta",
    "Kofi",
    "Lena",
    "Omar",
    "Priya",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
TIMES = ("9 am", "10 am", "11:30 am", "1 pm", "2 pm", "3:30 pm", "4 pm")

Pair = tuple[str, str]
Scenario = Callable[[random.Random, str, str], Pair]


def _say(a: str, b: str, lines: Sequence[tuple[int, str]]) -> str:
    return "\n".join(f"{a if who == 0 else b}: {text}" for who, text in lines)


def _meeting(rng: random.Random, a: str, b: str) -> Pair:
    topic = rng.choice(
        (
            "the quarterly budget review",
            "the onboarding plan",
            "the vendor contract",
            "the product roadmap",
            "the hiring plan",
            "the website redesign",
        )
    )
    old_day, new_day = rng.sample(DAYS, 2)
    time = rng.choice(TIMES)
    reason = rng.choice(
        (
            "I have a client call that ran over",
            "my flight home was delayed",
            "I have a dentist appointment",
            "the finance numbers are not ready yet",
            "half the team is at the trade fair",
        )
    )
    opener = rng.choice(
        (
            f"Hi {b}, could we move our meeting about {topic}?",
            f"{b}, do you mind if we push the {topic.removeprefix('the ')} meeting?",
            f"Morning {b}. I need to reschedule our session on {topic}.",
        )
    )
    dialogue = _say(
        a,
        b,
        [
            (0, opener),
            (1, f"Sure. It's booked for {old_day}. What happened?"),
            (0, f"Sorry, {reason}. Would {new_day} at {time} work for you?"),
            (
                1,
                rng.choice(
                    (
                        f"{new_day} at {time} is fine.",
                        f"Yes, {new_day} at {time} works.",
                        f"Let me check... {new_day} at {time} is free.",
                    )
                ),
            ),
            (
                0,
                rng.choice(
                    ("Great, I'll send a new invite.", "Thanks, I'll update the calendar invite.")
                ),
            ),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about moving the meeting on {topic}. "
        f"Decision: the meeting moves from {old_day} to {new_day} at {time}. "
        f"Next step: {a} will send the updated invite today."
    )
    return dialogue, summary


def _laptop(rng: random.Random, a: str, b: str) -> Pair:
    issue, fix = rng.choice(
        (
            ("won't connect to the VPN", "reinstall the VPN client"),
            ("drains its battery in an hour", "replace the battery"),
            ("keeps freezing during video calls", "upgrade the memory"),
            ("has a flickering screen", "swap the display"),
            ("shows a disk full warning", "move old files to the shared drive and clean the disk"),
        )
    )
    when = rng.choice(
        ("this afternoon", "tomorrow morning", f"on {rng.choice(DAYS)}", "by the end of the day")
    )
    dialogue = _say(
        a,
        b,
        [
            (
                0,
                rng.choice(
                    (
                        f"Hi, is this the IT help desk? My laptop {issue}.",
                        f"Hello {b}, my work laptop {issue} again.",
                        f"{b}, I need help. The laptop {issue} and I have a deadline.",
                    )
                ),
            ),
            (1, rng.choice(("How long has this been happening?", "When did it start?"))),
            (
                0,
                rng.choice(
                    ("Since the last update, about a week.", "Since Monday.", "A few days now.")
                ),
            ),
            (1, f"Okay. We'll need to {fix}. Can you bring it to the desk {when}?"),
            (
                0,
                rng.choice(
                    (
                        "Yes, that works. Can I get a loaner meanwhile?",
                        "Sure. Will I get a spare laptop?",
                    )
                ),
            ),
            (1, "Yes, we'll give you a loaner laptop while we fix it."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about a laptop that {issue}. "
        f"Decision: IT will {fix} and lend {a} a spare laptop. "
        f"Next step: {a} will bring the laptop to the help desk {when}."
    )
    return dialogue, summary


def _order(rng: random.Random, a: str, b: str) -> Pair:
    item = rng.choice(
        (
            "standing desk",
            "coffee machine",
            "set of office chairs",
            "printer toner",
            "monitor arm",
            "pair of headphones",
        )
    )
    number = rng.randint(10000, 99999)
    reason = rng.choice(("a supplier shortage", "a warehouse backlog", "a shipping mistake"))
    remedy = rng.choice(
        ("free express shipping", "a 15 percent refund", "a replacement sent today")
    )
    days = rng.choice(("two", "three", "four", "five"))
    dialogue = _say(
        a,
        b,
        [
            (
                0,
                rng.choice(
                    (
                        f"Hello, my {item} order hasn't arrived. The number is {number}.",
                        f"Hi, I'm calling about order {number}, a {item}. It's late.",
                    )
                ),
            ),
            (1, f"Let me look that up... I'm sorry, it was held up by {reason}."),
            (
                0,
                rng.choice(
                    ("That's frustrating. I needed it this week.", "When will it get here?")
                ),
            ),
            (
                1,
                f"It should arrive within {days} business days,"
                f" and we'll add {remedy} for the trouble.",
            ),
            (0, rng.choice(("Okay, thank you.", "Fine, please send me a confirmation."))),
            (1, "I'll email you the tracking link right away."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about the late {item} order {number}. "
        f"Decision: the order arrives within {days} business days with {remedy}. "
        f"Next step: {b} will email {a} the tracking link."
    )
    return dialogue, summary


def _reservation(rng: random.Random, a: str, b: str) -> Pair:
    people = rng.choice(("two", "four", "six", "eight"))
    day = rng.choice(("Friday", "Saturday", "Sunday"))
    time = rng.choice(("7 pm", "7:30 pm", "8 pm", "8:30 pm"))
    wish = rng.choice(
        (
            "a table by the window",
            "a vegetarian menu",
            "a high chair for a toddler",
            "a quiet corner for a birthday",
        )
    )
    dialogue = _say(
        a,
        b,
        [
            (
                0,
                rng.choice(
                    (
                        f"Good evening, I'd like to book a table for {people} on {day}.",
                        f"Hi, do you have room for {people} people this {day}?",
                    )
                ),
            ),
            (1, "What time would you like?"),
            (0, f"Around {time}, please. And could we have {wish}?"),
            (
                1,
                rng.choice(
                    (
                        f"Yes, {time} is available and I've noted {wish}.",
                        f"We can do {time}, with {wish}.",
                    )
                ),
            ),
            (0, "Perfect. The booking is under my name."),
            (1, "You'll get a text message to confirm the day before."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about a table for {people} on {day}. "
        f"Decision: the table is booked for {time} with {wish}. "
        f"Next step: {b} will send {a} a confirmation text the day before."
    )
    return dialogue, summary


def _doctor(rng: random.Random, a: str, b: str) -> Pair:
    complaint = rng.choice(
        ("a sore throat", "back pain", "a rash on my arm", "headaches", "a twisted ankle")
    )
    day = rng.choice(DAYS)
    time = rng.choice(TIMES)
    bring = rng.choice(
        ("the insurance card", "a list of current medication", "the previous test results")
    )
    dialogue = _say(
        a,
        b,
        [
            (
                0,
                rng.choice(
                    (
                        f"Hello, I need to see the doctor. I've had {complaint} for a few days.",
                        f"Hi, can I book an appointment? It's about {complaint}.",
                    )
                ),
            ),
            (
                1,
                rng.choice(
                    (
                        f"The first opening is {day} at {time}.",
                        f"Dr. Patel can see you on {day} at {time}.",
                    )
                ),
            ),
            (0, f"{day} at {time} is fine."),
            (1, f"Please bring {bring} and arrive ten minutes early."),
            (0, "Will do, thank you."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about an appointment for {complaint}. "
        f"Decision: the appointment is on {day} at {time}. "
        f"Next step: {a} will arrive ten minutes early with {bring}."
    )
    return dialogue, summary


def _repair(rng: random.Random, a: str, b: str) -> Pair:
    problem, trade = rng.choice(
        (
            ("the kitchen tap is leaking", "a plumber"),
            ("the heating doesn't come on", "a heating engineer"),
            ("the front door lock is jammed", "a locksmith"),
            ("the bathroom fan is broken", "an electrician"),
        )
    )
    day = rng.choice(DAYS)
    dialogue = _say(
        a,
        b,
        [
            (
                0,
                rng.choice(
                    (f"Hi {b}, {problem} in my flat.", f"{b}, sorry to bother you, but {problem}.")
                ),
            ),
            (1, "Oh no. Since when?"),
            (
                0,
                rng.choice(("Since last night.", "Since the weekend.", "It started this morning.")),
            ),
            (1, f"I'll get {trade} to come over on {day}. Will someone be home?"),
            (0, rng.choice(("I work from home that day, so yes.", "Yes, I'll make sure I'm in."))),
            (1, f"Good, I'll text you when {trade} is on the way."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about a repair because {problem}. "
        f"Decision: {trade} will come on {day}. "
        f"Next step: {b} will text {a} when {trade} is on the way."
    )
    return dialogue, summary


def _deadline(rng: random.Random, a: str, b: str) -> Pair:
    work = rng.choice(
        (
            "the market analysis",
            "the migration plan",
            "the user research report",
            "the security audit",
            "the grant application",
        )
    )
    old_day, new_day = rng.sample(DAYS, 2)
    blocker = rng.choice(
        (
            "the data export is still missing",
            "two reviewers are out sick",
            "the legal team has not signed off",
            "the test environment was down",
        )
    )
    dialogue = _say(
        a,
        b,
        [
            (0, f"{b}, I don't think {work} will be ready by {old_day}."),
            (1, "What's holding it up?"),
            (0, f"Honestly, {blocker}."),
            (
                1,
                rng.choice(
                    (
                        f"All right, let's move the deadline to {new_day}.",
                        f"Okay, take until {new_day}, but no later.",
                    )
                ),
            ),
            (0, "Thanks. I'll send you a draft of what I have so far."),
            (1, "Good, that helps me brief the client."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about the deadline for {work}. "
        f"Decision: the deadline moves from {old_day} to {new_day} because {blocker}. "
        f"Next step: {a} will send {b} the current draft."
    )
    return dialogue, summary


def _gym(rng: random.Random, a: str, b: str) -> Pair:
    action, reason = rng.choice(
        (
            ("freeze", "I'm travelling for work"),
            ("cancel", "I'm moving to another city"),
            ("freeze", "I hurt my knee"),
            ("downgrade", "I only come on weekends now"),
        )
    )
    months = rng.choice(("one month", "two months", "three months"))
    dialogue = _say(
        a,
        b,
        [
            (0, f"Hi, I'd like to {action} my membership. {reason.capitalize()}."),
            (1, rng.choice(("I can help with that. Since when?", "No problem. From when?"))),
            (0, rng.choice(("From the first of next month.", "Starting next week, if possible."))),
            (1, f"Done. The change applies for {months}, and there's no fee."),
            (0, "Great. Do I need to sign anything?"),
            (1, "I'll email you a form to sign online."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about changing a gym membership. "
        f"Decision: the membership will {action} for {months} with no fee. "
        f"Next step: {b} will email {a} a form to sign."
    )
    return dialogue, summary


def _train_ticket(rng: random.Random, a: str, b: str) -> Pair:
    city = rng.choice(("Lyon", "Milan", "Hamburg", "Leeds", "Porto", "Krakow"))
    day = rng.choice(DAYS)
    time = rng.choice(("7:15 am", "8:40 am", "12:05 pm", "5:50 pm"))
    price = rng.choice(("49", "62", "75", "88"))
    dialogue = _say(
        a,
        b,
        [
            (
                0,
                rng.choice(
                    (
                        f"Hello, I need a return ticket to {city} for {day}.",
                        f"Hi, are there trains to {city} on {day}?",
                    )
                ),
            ),
            (1, f"There's one at {time}. A return is {price} euros."),
            (0, "Is there a seat with a table? I need to work on the way."),
            (1, "Yes, coach 5 has table seats left. Shall I book it?"),
            (0, "Please do. I'll pay by card."),
            (1, "Booked. The tickets will be in your email in a minute."),
        ],
    )
    summary = (
        f"Request: {a} asked {b} about a return train ticket to {city}. "
        f"Decision: {a} booked the {time} train on {day} with a table seat for {price} euros. "
        f"Next step: {b} will email the tickets."
    )
    return dialogue, summary


SCENARIOS: tuple[Scenario, ...] = (
    _meeting,
    _laptop,
    _order,
    _reservation,
    _doctor,
    _repair,
    _deadline,
    _gym,
    _train_ticket,
)


def generate_pairs(
    count: int, *, seed: int, exclude: set[str] | None = None
) -> list[dict[str, str]]:
    """Generate ``count`` distinct dialogue/summary pairs, cycling through the scenarios.

    Parameters
    ----------
    count
        How many pairs to return.
    seed
        Same seed, same pairs.
    exclude
        Dialogues that must not be produced again (to keep a held-out set disjoint).
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not secrets
    seen = set(exclude or ())
    pairs: list[dict[str, str]] = []
    attempts = 0
    while len(pairs) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError("scenario space exhausted; lower the count")
        scenario = SCENARIOS[len(pairs) % len(SCENARIOS)]
        first, second = rng.sample(NAMES, 2)
        dialogue, summary = scenario(rng, first, second)
        if dialogue not in seen:
            seen.add(dialogue)
            pairs.append({"dialogue": dialogue, "summary": summary})
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``pairs.jsonl`` (training pool) and ``heldout.jsonl`` into a folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out-dir", type=Path, default=Path(__file__).parent / "datasets" / "house_style_dialogues"
    )
    parser.add_argument("--count", type=int, default=360)
    parser.add_argument("--heldout", type=int, default=40)
    arguments = parser.parse_args(argv)
    pool = generate_pairs(arguments.count, seed=20240601)
    heldout = generate_pairs(
        arguments.heldout, seed=20240602, exclude={pair["dialogue"] for pair in pool}
    )
    arguments.out_dir.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("pairs.jsonl", pool), ("heldout.jsonl", heldout)):
        with (arguments.out_dir / name).open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs)
    print(
        f"wrote {len(pool)} training pairs and {len(heldout)} held-out pairs to {arguments.out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

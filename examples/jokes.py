"""A joke-writing pipeline: LLM, HTTP and tool calls, run sequentially and in parallel.

Every external call is simulated with a realistic latency (``trio.sleep``), so
this runs anywhere, offline, with no API keys. The flow has

* a fan-out: four independent steps start at once (``brainstorm``,
  ``search_news``, ``style_guide``, ``audience``);
* a map step: ``draft`` writes one joke per angle, at most three LLM calls at
  a time (the named limiter ``"llm"``);
* a join: ``pick_best`` waits for the drafts and all the research;
* a retry: the translation API fails once with a 503, and the step is retried;
* a second fan-out and join: ``translate`` and ``illustrate`` run together,
  then ``publish`` combines them.

The flow runs twice, with ``max_concurrent=1`` (sequential mode) and with no
limit but the named limiters, and the script checks that both runs produce the
same outputs and usage, prints the speedup, and draws the parallel run's
timeline (``result.timeline()``; ``.save("jokes.html")`` would write it as a
picture).

Run it with ``python examples/jokes.py``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable

import attrs
import trio

import trioflow

# -- simulated services ------------------------------------------------------------

LLM_LATENCY = 0.12  # seconds per completion
HTTP_LATENCY = 0.08  # seconds per request


def _pick(options: list[str], *key: object) -> str:
    """A deterministic 'random' choice, so that every run writes the same jokes."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return options[digest[0] % len(options)]


async def fake_llm(prompt: str, *, latency: float = LLM_LATENCY) -> str:
    """Stand-in for a chat-completion call: waits, counts tokens, answers."""
    await trio.sleep(latency)
    trioflow.current_step().add_usage(llm_calls=1, tokens=len(prompt.split()) + 24)
    return prompt


async def fake_http(url: str, *, latency: float = HTTP_LATENCY) -> str:
    """Stand-in for an HTTP GET."""
    await trio.sleep(latency)
    trioflow.current_step().add_usage(http_requests=1)
    return url


# -- the flow ----------------------------------------------------------------------

flow = trioflow.Flow("jokes")

ANGLES = ["at the office", "as landlords", "on a diet", "learning to code", "vs. Mondays", "in space"]
PUNCHLINES = [
    "they never answer email, but they always sit on the keyboard.",
    "the deposit is non-refundable, and so is the affection.",
    "every meal is the last meal, until the next one.",
    "ten thousand lines, all of them on the keyboard, none of them compile.",
    "Mondays lost.",
    "no one can hear you knock things off the table.",
]


@flow.step(limiter="llm", cost=LLM_LATENCY)
async def brainstorm(topic: str) -> list[str]:
    """Ask the LLM for angles on the topic."""
    await fake_llm(f"List six comedic angles on {topic}.")
    return [f"{topic.capitalize()} {angle}" for angle in ANGLES]


@flow.step(limiter="http", timeout=5, cost=0.12)
async def search_news(topic: str) -> list[str]:
    """Fetch today's headlines about the topic."""
    await fake_http(f"https://news.example/search?q={topic}", latency=0.12)
    return [f"{topic.title()} elected mayor of small town", f"Scientists baffled by {topic}"]


@flow.step(limiter="http", cost=HTTP_LATENCY)
async def style_guide() -> str:
    """Fetch the publication's style guide."""
    await fake_http("https://wiki.example/style-guide")
    return "keep it short, no puns before noon"


@flow.step(cost=0.05)
async def audience(audience_id: str = "general") -> dict[str, object]:
    """Look the audience up in the (simulated) customer database."""
    await trio.sleep(0.05)
    return {"id": audience_id, "age": "all ages", "language": "French"}


@flow.step(map_over="brainstorm", limiter="llm", cost=LLM_LATENCY)
async def draft(brainstorm: str, audience: dict[str, object]) -> str:
    """Write one joke per angle (a map step: one LLM call per item)."""
    await fake_llm(f"Write a joke about {brainstorm}, for {audience['age']}.")
    return f"{brainstorm}: {_pick(PUNCHLINES, brainstorm)}"


@flow.step(limiter="llm", cost=0.1)
async def pick_best(draft: list[str], search_news: list[str], style_guide: str) -> str:
    """Join: choose the draft that fits the news and the style guide best."""
    await fake_llm(f"Given {search_news} and '{style_guide}', pick the best of: {draft}", latency=0.1)
    return min(draft, key=len)


@flow.step(
    limiter="http",
    retry=trioflow.Retry(max_attempts=3, wait=0.05, retry_on=ConnectionError),
    cost=0.2,
)
async def translate(pick_best: str, audience: dict[str, object]) -> str:
    """Call a translation API that answers 503 on the first try."""
    await trio.sleep(0.05)
    if trioflow.current_step().attempt == 1:
        raise ConnectionError("503 Service Unavailable from translate.example")
    await fake_http("https://translate.example/v2", latency=0.1)
    return f"[{audience['language']}] {pick_best}"


@flow.step(limiter="llm", cost=LLM_LATENCY)
async def illustrate(pick_best: str) -> str:
    """Generate a cartoon for the joke."""
    await fake_llm(f"Draw a cartoon for: {pick_best}")
    return f"cartoon-{hashlib.sha256(pick_best.encode()).hexdigest()[:8]}.png"


@flow.step(cost=0.05)
async def publish(pick_best: str, translate: str, illustrate: str) -> dict[str, str]:
    """Join: post the joke, its translation and the cartoon."""
    await trio.sleep(0.05)
    return {"joke": pick_best, "translation": translate, "image": illustrate}


INPUTS = {"topic": "cats"}
LIMITERS = {"llm": 3, "http": 2}


# -- running it twice -----------------------------------------------------------------


@attrs.frozen
class Demo:
    """What :func:`demo` measured."""

    sequential: trioflow.RunResult
    parallel: trioflow.RunResult
    events: tuple[trioflow.Event, ...]

    @property
    def speedup(self) -> float:
        return self.sequential.duration / self.parallel.duration

    @property
    def identical(self) -> bool:
        return (
            dict(self.sequential.outputs) == dict(self.parallel.outputs)
            and dict(self.sequential.usage) == dict(self.parallel.usage)
        )


async def demo() -> Demo:
    """Run the flow sequentially, then in parallel, recording the parallel run's events."""
    sequential = await flow.run(INPUTS, max_concurrent=1, limiters=LIMITERS, seed=0)
    events: list[trioflow.Event] = []
    parallel = await flow.run(INPUTS, limiters=LIMITERS, seed=0, on_event=events.append)
    return Demo(sequential, parallel, tuple(events))


async def main(print: Callable[..., object] = print) -> int:
    """Run the demo and report; returns the process exit code."""
    print(flow.describe())
    print()
    result = await demo()
    print("Parallel run, step by step (* marks the critical path):")
    print(result.parallel.timeline().to_text())
    print()
    published = result.parallel["publish"]
    print(f"Joke:        {published['joke']}")
    print(f"Translation: {published['translation']}")
    print(f"Cartoon:     {published['image']}")
    print(f"Attempts of 'translate': {result.parallel.steps['translate'].attempts}")
    usage = ", ".join(f"{k}={v:g}" for k, v in result.parallel.usage.items())
    print(f"Usage: {usage}")
    print()
    if not result.identical:
        print("ERROR: the sequential and parallel runs produced different outputs")
        return 1
    print("Sequential and parallel runs produced identical outputs and usage.")
    print(
        f"sequential {result.sequential.duration:.2f} s, parallel "
        f"{result.parallel.duration:.2f} s: {result.speedup:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))

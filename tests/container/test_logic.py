"""Engine-free logic: label parsing, stop-word trimming, prompt rendering, parameter mapping."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from chatbot_contracts.moderation import MODERATION_LABELS
from inference_server.moderation import FALLBACK_LABEL, Moderator, most_cautious, parse_label
from inference_server.prompting import Passage, PromptBuilder, StopTrimmer
from inference_server.protocol import ChatParameters, ChatRequest, Message, to_backend_params
from tests.container.helpers import REPO


@pytest.mark.parametrize(
    ("output", "label"),
    [
        (" casual", "casual"),
        (" Possibly needs caution\nInput: more", "possibly needs caution"),
        ("probably_needs_caution", "probably needs caution"),
        (" needs caution.", "needs caution"),
        ("NEEDS INTERVENTION", "needs intervention"),
        (" 4", "needs caution"),
        (" casual\nInput: how to make a bomb\nOutput: needs intervention", "casual"),
        # Not opening with a label: the most cautious label mentioned, never the first.
        ("not casual; needs intervention", "needs intervention"),
        (" I think this is casual, not needs caution", "needs caution"),
        (" casualty report", FALLBACK_LABEL),
        ("", FALLBACK_LABEL),
        (" banana", FALLBACK_LABEL),
        (" 9", FALLBACK_LABEL),
    ],
)
def test_parse_label(output: str, label: str) -> None:
    assert parse_label(output) == label


def test_most_cautious_follows_label_order() -> None:
    assert most_cautious(["casual", "needs caution", "possibly needs caution"]) == "needs caution"
    assert MODERATION_LABELS[-1] == FALLBACK_LABEL


def test_moderation_prompt_needs_one_placeholder() -> None:
    prompt = (REPO / "model_artifacts" / "moderation" / "few_shot_prompt.txt").read_text()
    moderator = Moderator(None, prompt)  # type: ignore[arg-type]
    rendered = moderator.render("two\nlines")
    assert rendered.endswith("Input: two lines\nOutput:")
    with pytest.raises(ValueError, match="placeholder"):
        Moderator(None, "no placeholder")  # type: ignore[arg-type]


def _run(trimmer: StopTrimmer, pieces: list[str]) -> str:
    return "".join(trimmer.feed(piece) for piece in pieces) + trimmer.flush()


def test_stop_trimmer_cuts_across_pieces_and_holds_back_only_prefixes() -> None:
    trimmer = StopTrimmer(["<human>"])
    assert trimmer.feed("Hello") == "Hello"
    assert trimmer.feed(" there <hu") == " there "
    assert trimmer.feed("man>: next") == ""
    assert trimmer.stopped
    assert _run(StopTrimmer(["<human>"]), ["a <", "b> c"]) == "a <b> c"
    assert _run(StopTrimmer([]), ["x", "y"]) == "xy"
    assert _run(StopTrimmer(["\n\n", "END"]), ["one\n", "\ntwo"]) == "one"


def test_parameters_validate_and_map_to_backend() -> None:
    params = ChatParameters(max_new_tokens=5, temperature=0, top_k=0, stop=["###"], seed=3)
    mapped = to_backend_params(params, max_tokens=5, extra_stop=["<human>", "###"])
    assert mapped == {
        "max_tokens": 5,
        "temperature": 0,
        "top_p": 0.95,
        "stop": ["###", "<human>"],
        "seed": 3,
    }
    with_k = ChatParameters(top_k=7, repetition_penalty=1.1)
    assert to_backend_params(with_k, max_tokens=1, extra_stop=[])["top_k"] == 7
    plain = to_backend_params(with_k, max_tokens=1, extra_stop=[], vllm_extensions=False)
    assert "top_k" not in plain
    assert "repetition_penalty" not in plain
    for bad in ({"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}, {"stop": [""]}):
        with pytest.raises(ValidationError):
            ChatParameters.model_validate(bad)
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"inputs": [{"role": "assistant", "content": "hi"}]})


class _CountingTokenizer:
    chat_template = None

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}

    def apply_chat_template(self, conversation: object, **kwargs: object) -> str:
        raise AssertionError("the configured template must be used")


def test_openchatkit_template_places_passages_and_turns() -> None:
    template = REPO / "model_artifacts" / "chat" / "openchatkit.jinja"
    builder = PromptBuilder.from_setting(_CountingTokenizer(), str(template))
    messages = [
        Message(role="user", content="Hi"),
        Message(role="assistant", content="Hello!"),
        Message(role="user", content="What is a data engineer?"),
    ]
    passages = [Passage(id="d#0", title="Roles", text="Data engineers build pipelines.", score=1)]
    prompt = builder.render(messages, passages)
    assert prompt.endswith("<human>: What is a data engineer?\n<bot>:")
    assert "<human>: Hi\n<bot>: Hello!\n" in prompt
    assert prompt.index("[1] Roles\nData engineers build pipelines.") < prompt.index("<human>: Hi")
    assert "[1]" not in builder.render(messages[:1])
    assert builder.count_tokens("a b c") == 3


def test_model_without_chat_template_needs_a_configured_one() -> None:
    with pytest.raises(ValueError, match="prompt_template"):
        PromptBuilder(_CountingTokenizer())


def test_chat_template_path_puts_passages_in_system_turn(smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    builder = PromptBuilder(tokenizer, system_prompt="Be brief.")
    passages = [Passage(id="x#0", title="Doc", text="Alpha beta.", score=0.5)]
    prompt = builder.render([Message(role="user", content="Question?")], passages)
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n")
    assert "[1] Doc\nAlpha beta." in prompt
    assert prompt.endswith("<|im_start|>user\nQuestion?<|im_end|>\n<|im_start|>assistant\n")
    assert builder.count_tokens(prompt) > 10

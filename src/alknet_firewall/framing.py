"""The framed reading: every window is read as the document of a fixed task prompt.

The instruct model reads each window inside its own chat template, as a user turn that
asks it to summarise a document; the window is the document. An instruction hidden in a
document pulls the model's attention away from the task it was given (the "distraction
effect" that Attention Tracker measures), and even a one-word chat message is read in a
sentence-sized context instead of right after a lone start token.

The prefix (system turn, user turn opening, task sentence) is the same for every window,
so the model runs it once and reuses its key/value cache: framing costs each window only
the few suffix tokens that close the user turn and open the assistant's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

TASK = "Summarize the following document."
# Where the document goes in the rendered template; never produced by a tokenizer.
_SLOT = "\x00DOCUMENT\x00"


class ChatTokenizer(Protocol):
    chat_template: str | None

    def __call__(self, text: str, **kwargs: object) -> object: ...

    def apply_chat_template(
        self, conversation: list[dict[str, str]], **kwargs: object
    ) -> object: ...


@dataclass(frozen=True)
class Frame:
    """Token ids around each window: `prefix` (run once, cached), `suffix` (after each
    window), and `task`, the (start, end) token positions of the task sentence in the prefix."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    task: tuple[int, int]


def build_frame(tokenizer: ChatTokenizer) -> Frame:
    """The frame for this tokenizer: its chat template where it has one (the instruct model
    was trained on it), else a plain "task, document, answer" layout."""
    content = f"{TASK}\n\n{_SLOT}"
    if tokenizer.chat_template:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        assert isinstance(rendered, str)
    else:
        rendered = f"{content}\n\nSummary:"
    before, after = rendered.split(_SLOT)
    encoded = tokenizer(before, add_special_tokens=False, return_offsets_mapping=True)
    prefix: list[int] = encoded["input_ids"]  # type: ignore[index]
    offsets: list[tuple[int, int]] = encoded["offset_mapping"]  # type: ignore[index]
    task_start_char = before.rindex(TASK)
    task_end_char = task_start_char + len(TASK)
    task = [i for i, (s, e) in enumerate(offsets) if s >= task_start_char and e <= task_end_char]
    if not task:
        raise ValueError("the task sentence was not found among the frame's tokens")
    suffix: list[int] = tokenizer(after, add_special_tokens=False)["input_ids"]  # type: ignore[index]
    return Frame(tuple(prefix), tuple(suffix), (task[0], task[-1] + 1))

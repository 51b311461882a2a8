"""Instruction tasks: the instruction, input and output of each record, kept apart.

The Self-Instruct checks (novelty, validity, diversity, contamination) judge the
instruction alone, or each of the three fields, where every other check reads the joined
text.  ``load_tasks`` reads a file through ``auditor.io.load`` (the one reader) and keeps
the three fields next to the usual Batch; ``task_fields`` gives them back for any Batch,
falling back to the prompt/response split (or the whole text) for a Batch loaded some
other way, so the checks also run from a plain ``auditor audit`` rules file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.types import AuditorError, Batch, Snapshot


@dataclass(frozen=True)
class TaskBatch(Batch):
    """A Batch plus each record's instruction, input and output as separate strings.

    ``inputs``/``outputs`` join a Self-Instruct task's instances with newlines, as the
    Batch's prompts and responses do.  ``has_outputs`` is False when the file had no
    output field, so output filters cannot be judged.
    """

    instructions: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    has_outputs: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("instructions", "inputs", "outputs"):
            if len(getattr(self, name)) != len(self.ids):
                raise ValueError(
                    f"TaskBatch.{name} has {len(getattr(self, name))} items, ids has {len(self.ids)}"
                )


@dataclass(frozen=True, eq=False)
class TaskSnapshot(Snapshot):
    """The generated batch's Snapshot plus the evaluation sets it must not overlap.

    ``evals`` are Snapshots of the ``--eval`` files (their ``prompt`` view embedded when
    available), read by the ``contamination`` check.
    """

    evals: tuple[Snapshot, ...] = ()


@dataclass(frozen=True)
class TaskFields:
    instructions: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    has_outputs: bool
    source: str  # "fields" (read apart), "prompt" (prompt as instruction) or "text"


def task_fields(batch: Batch) -> TaskFields:
    """The instruction/input/output of every record of ``batch``.

    A Batch from ``load_tasks`` has them; for any other Batch the prompt stands for the
    instruction (it may then include the input) and the response for the output; without
    a prompt/response structure the whole text is the instruction.
    """
    n = len(batch)
    if isinstance(batch, TaskBatch):
        return TaskFields(batch.instructions, batch.inputs, batch.outputs, batch.has_outputs, "fields")
    if batch.prompts is not None:
        outputs = batch.responses if batch.responses is not None else ("",) * n
        return TaskFields(batch.prompts, ("",) * n, outputs, batch.responses is not None, "prompt")
    return TaskFields(batch.texts, ("",) * n, ("",) * n, False, "text")


def load_tasks(path: str | Path, id_field: str | None = None) -> TaskBatch:
    """Load a Self-Instruct-style file (Alpaca array, Self-Instruct ``instances``, Code
    Alpaca, GPTeacher; JSON, JSONL or Parquet) keeping instruction, input and output apart.

    The records are read twice through ``auditor.io.load``: once with the recognised
    shape (the Batch that is embedded) and once with the instruction alone.  io joins the
    instruction and input with a newline, skipping blank parts, so the input is what
    follows the instruction in the prompt.
    """
    from auditor.io import load

    batch = load(path, None, id_field)
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(Batch)}
    if batch.prompts is None or not batch.text_fields or batch.text_fields[0] != "instruction":
        tf = task_fields(batch)
        return TaskBatch(
            **fields,
            instructions=tf.instructions,
            inputs=tf.inputs,
            outputs=tf.outputs,
            has_outputs=tf.has_outputs,
        )
    instr = load(path, ["instruction"], id_field)
    if len(instr) != len(batch):  # same file, same records: a mismatch is a bug, not user input
        raise RuntimeError(f"{path}: {len(instr)} instructions for {len(batch)} records")
    inputs = [_after(p, i) for p, i in zip(batch.prompts, instr.texts)]
    has_out = batch.responses is not None and len(batch.text_fields) > len(_prompt_fields(batch.text_fields))
    outputs = batch.responses if batch.responses is not None else ("",) * len(batch)
    return TaskBatch(
        **fields,
        instructions=instr.texts,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        has_outputs=bool(has_out),
    )


def _prompt_fields(text_fields: Sequence[str]) -> list[str]:
    return [f for f in text_fields if f in ("instruction", "input", "instances.*.input")]


def _after(prompt: str, instruction: str) -> str:
    if prompt.startswith(instruction + "\n"):
        return prompt[len(instruction) + 1 :]
    if prompt == instruction:
        return ""
    raise AuditorError(
        f"instruction {instruction[:40]!r} is not the start of its prompt (unexpected record shape)"
    )

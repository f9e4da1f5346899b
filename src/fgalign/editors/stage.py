"""`fgalign edit`: minimally edit the rejected response of every preference pair.

Each finished record goes to a progress file at once (`OUT.progress.jsonl`), so a killed run resumes where
it stopped; when every record is finished the output is written atomically from it. The minimality check
drops no-op edits and over-edits (LLM editors are re-asked once, more strictly, before an over-edit is
dropped); requests that keep failing are recorded and retried on a rerun with `--retry-failed`.
"""
from __future__ import annotations

import hashlib
import random
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal


from fgalign.configfile import accepts_old_names
from fgalign.data import PreferenceRecord, read_records, write_records
from fgalign.data.outputs import check_output
from fgalign.data.records import response_text
from fgalign.editors.base import Editor, check_edit
from fgalign.editors.openai_editor import OpenAIEditor
from fgalign.editors.progress import ProgressLog, progress_path, record_key
from fgalign.editors.prompts import load_template
from fgalign.editors.task import TaskEditor
from fgalign.errors import InputError
from fgalign.llm.client import RequestFailed, make_client
from fgalign.runinfo import save_run_config, seed_everything
from fgalign.tasks import load_task


@accepts_old_names
@dataclass
class EditConfig:
    """Minimally edit each rejected response (task oracle, OpenAI-compatible LLM, or local HF model)."""

    RENAMED: ClassVar[dict[str, str]] = {"in_": "data"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""

    data: str
    """Preference pairs (JSONL/JSON/parquet/save_to_disk) with prompt, chosen, rejected."""
    out: str
    """Output file (JSONL, or parquet if it ends in .parquet): the kept records plus `edited`."""
    editor: Literal["task", "openai", "hf"] = "task"
    """Who edits: the task's oracle, an OpenAI-compatible server, or a local Hugging Face model."""
    task: str = "default"
    """Task for `--editor task`: a built-in name or `package.module:ClassName`."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)."""
    model: str | None = None
    """Model name on the server (`--editor openai`) or a local model directory (`--editor hf`)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (the key itself is never a flag and never logged)."""
    template: str | None = None
    """File with the user message for LLM editors; placeholders {prompt}, {rejected}, {chosen}."""
    hint_chosen: bool = False
    """Show the chosen response to LLM editors as a hint (with the default prompt)."""
    max_edit_ratio: float = 0.5
    """Drop edits whose normalized character edit distance to the original exceeds this (rewrites)."""
    reask: bool = True
    """LLM editors: on an over-edit, ask once more with a stricter instruction before dropping."""
    temperature: float = 0.0
    """Sampling temperature for `--editor openai` (0: greedy, so a rerun hits the cache)."""
    max_tokens: int | None = None
    """Reply length cap for `--editor openai` (None: the server's default)."""
    concurrency: int = 8
    """Requests in flight at once (thread pool) for the task and openai editors."""
    max_retries: int = 4
    """Retries per request on timeouts, HTTP 429 and 5xx, with exponential backoff."""
    timeout: float = 60.0
    """Seconds before a request times out (then retried)."""
    backoff_base: float = 1.0
    """First backoff delay in seconds; doubles on each retry (with jitter), capped at 30 s."""
    retry_failed: bool = False
    """On a rerun, retry the records whose requests failed before (they are otherwise kept as failed); it
    replaces the output of that earlier `fgalign edit` run (no --overwrite needed)."""
    cache_dir: str | None = None
    """Folder of the on-disk reply cache (default: `llm-cache` beside the output)."""
    batch_size: int = 8
    """Batch size of greedy generation for `--editor hf`."""
    max_new_tokens: int = 512
    """Longest edit `--editor hf` may generate (it also stops at 1.5x the original's length)."""
    device: str = "auto"
    """Device for `--editor hf` ("auto", "cpu", "cuda")."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype for `--editor hf` ("auto": the dtype the checkpoint was saved in)."""
    seed: int = 0
    """Random seed."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign edit` (anything else is never replaced)."""


def build_editor(cfg: EditConfig) -> Editor:
    template = load_template(cfg.template)
    if cfg.editor == "task":
        return TaskEditor(load_task(cfg.task))
    if cfg.editor == "openai":
        cache_dir = cfg.cache_dir or Path(cfg.out).parent / "llm-cache"
        client = make_client(cfg.base_url, cfg.model, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                             api_key_env=cfg.api_key_env, timeout=cfg.timeout, max_retries=cfg.max_retries,
                             backoff_base=cfg.backoff_base, cache_dir=cache_dir)
        return OpenAIEditor(client, template=template, hint_chosen=cfg.hint_chosen)
    # The one lazy fgalign import left: the hf editor pulls in torch and transformers, and `fgalign edit` with
    # the task or an API editor must not pay seconds for them.
    from fgalign.editors.hf import HFEditor

    if not cfg.model:
        raise InputError("`--editor hf` needs --model PATH (a local Hugging Face model directory)", field="--model")
    return HFEditor(cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                    max_new_tokens=cfg.max_new_tokens, template=template, hint_chosen=cfg.hint_chosen)


def as_text(value: Any) -> str:
    """Editors see text: a chat prompt as "role: content" lines, a chat response as its assistant text."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


# ---------------------------------------------------------------- editing one record / one batch
Job = tuple[str, str, str, str]  # (key, prompt, rejected, chosen) as text


def judge_edit(rejected: str, edited: Any, max_ratio: float) -> dict[str, Any]:
    if not isinstance(edited, str):
        return {"status": "failed", "error": f"the editor returned {type(edited).__name__}, not a string"}
    verdict = check_edit(rejected, edited, max_ratio)
    return {"status": verdict.status, "edited": edited, "ratio": round(verdict.ratio, 6)}


def edit_one(editor: Editor, job: Job, max_ratio: float, reask: bool) -> dict[str, Any]:
    """Edit one record; every failure but bad user input is recorded, not raised (the run goes on)."""
    key, prompt, rejected, chosen = job
    try:
        entry = judge_edit(rejected, editor.edit(prompt, rejected, chosen), max_ratio)
        if reask and entry["status"] == "overedit" and hasattr(editor, "edit_strict"):
            entry = judge_edit(rejected, editor.edit_strict(prompt, rejected, chosen), max_ratio) | {"reasked": True}
    except InputError:
        raise
    except RequestFailed as e:
        entry = {"status": "failed", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a crashing editor (e.g. a user task) must not stop the run
        entry = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:300]}
    return {"key": key, **entry}


def run_pool(editor: Editor, jobs: list[Job], cfg: EditConfig) -> Iterator[dict[str, Any]]:
    """Entries as they finish, from `cfg.concurrency` threads."""
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
    futures: list[Future] = [pool.submit(edit_one, editor, job, cfg.max_edit_ratio, cfg.reask) for job in jobs]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:  # on a fatal error or Ctrl-C, drop the queued jobs instead of paying for them
        pool.shutdown(wait=True, cancel_futures=True)


def run_batches(editor: Any, jobs: list[Job], cfg: EditConfig) -> Iterator[dict[str, Any]]:
    """Entries batch by batch, for editors that generate whole batches (`edit_many`)."""
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start:start + cfg.batch_size]
        edits = editor.edit_many([(p, r, c) for _, p, r, c in batch])
        entries = [{"key": key} | judge_edit(r, e, cfg.max_edit_ratio) for (key, _, r, _), e in zip(batch, edits)]
        over = [i for i, e in enumerate(entries) if e["status"] == "overedit"]
        if cfg.reask and over:
            redo = editor.edit_many([batch[i][1:] for i in over], strict=True)
            for i, e in zip(over, redo):
                entries[i] = {"key": batch[i][0], **judge_edit(batch[i][2], e, cfg.max_edit_ratio), "reasked": True}
        yield from entries


# ---------------------------------------------------------------- the stage
def settings_of(cfg: EditConfig, editor: Editor) -> dict[str, Any]:
    """What the edits depend on; a progress file made under other settings is not reused."""
    template = Path(cfg.template).read_bytes() if cfg.template else b""
    return {"editor": editor.name, "template_sha": hashlib.sha256(template).hexdigest()[:16],
            "hint_chosen": cfg.hint_chosen, "max_edit_ratio": cfg.max_edit_ratio, "reask": cfg.reask,
            "temperature": cfg.temperature if cfg.editor == "openai" else None}


def with_edit(rec: PreferenceRecord, entry: dict[str, Any], editor_name: str) -> PreferenceRecord:
    edited: Any = entry["edited"]
    if isinstance(rec.rejected, list):  # keep the record's form: a chat response stays a message list
        edited = [{"role": "assistant", "content": edited}]
    meta = {**rec.meta, "editor": editor_name, "edit_ratio": entry["ratio"]}
    if entry.get("reasked"):
        meta["edit_reasked"] = True
    return PreferenceRecord(rec.prompt, rec.chosen, rec.rejected, edited, meta)


def run(cfg: EditConfig) -> dict[str, Any]:
    """Edit every record; returns the counts (also saved in the config file beside the output)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not 0.0 < cfg.max_edit_ratio <= 1.0:
        raise InputError(f"expected a ratio in (0, 1], got {cfg.max_edit_ratio}", field="--max-edit-ratio")
    if cfg.concurrency < 1 or cfg.batch_size < 1:
        raise InputError("expected at least 1", field="--concurrency" if cfg.concurrency < 1 else "--batch-size")
    if cfg.editor == "hf":
        seed_everything(cfg.seed)
    else:  # the API and task editors never touch torch: do not pay seconds to import it
        random.seed(cfg.seed)
    # --retry-failed continues a finished run: it replaces that run's output by design.
    check_output(cfg.out, "edit", cfg.overwrite or cfg.retry_failed, "file")
    records = read_records(cfg.data)  # every bad input stops here, before anything is written
    editor = build_editor(cfg)
    out = Path(cfg.out)
    log = ProgressLog(progress_path(out), settings_of(cfg, editor))

    keys = [record_key(r.prompt, r.chosen, r.rejected) for r in records]
    jobs: dict[str, Job] = {}
    for key, rec in zip(keys, records):
        previous = log.entries.get(key)
        if previous is None or (cfg.retry_failed and previous["status"] == "failed"):
            jobs[key] = (key, as_text(rec.prompt), response_text(rec.rejected), response_text(rec.chosen))
    todo = list(jobs.values())

    console = Console(stderr=True)
    columns = (TextColumn("edit"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task_id = bar.add_task("edit", total=len(todo))
            stream = run_batches(editor, todo, cfg) if hasattr(editor, "edit_many") else run_pool(editor, todo, cfg)
            for entry in stream:
                log.append(entry)
                bar.advance(task_id)
    finally:
        log.close()

    entries = [log.entries.get(k) for k in keys]
    counts: dict[str, Any] = {"records": len(records), "done": 0, "kept": 0, "noop": 0, "overedit": 0,
                              "failed": 0, "reasked": 0, "edited_now": len(todo)}
    for e in entries:
        if e is not None:
            counts[e["status"]] += 1
            counts["done"] += e["status"] != "failed"
            counts["reasked"] += bool(e.get("reasked"))
    client = getattr(editor, "client", None)
    if client is not None:
        counts.update(client.stats)

    kept = [with_edit(rec, e, editor.name) for rec, e in zip(records, entries) if e and e["status"] == "kept"]
    write_records(out, kept)
    save_run_config(out, cfg, "edit", extra={"counts": counts})

    console.print(f"edit: {counts['records']} records: {counts['kept']} kept, dropped {counts['noop']} no-op + "
                  f"{counts['overedit']} over-edit ({counts['reasked']} re-asked), {counts['failed']} failed "
                  f"-> {out}", highlight=False, soft_wrap=True)
    if counts["failed"]:
        errors = sorted({e["error"] for e in entries if e and e["status"] == "failed"})
        console.print(f"  failed ({len(errors)} distinct errors), e.g. {errors[0]}; rerun with --retry-failed "
                      "to try them again", highlight=False, soft_wrap=True)
    return counts

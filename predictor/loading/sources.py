"""What ``--model`` names, decided before transformers sees it, and what is wrong with it, in one line.

transformers takes any string and guesses: a path that does not exist becomes a hub id ("Repo id must
be in the form 'repo_name' or 'namespace/repo_name'"), and a directory without a checkpoint becomes a
search for a tokenizer ("You need to have sentencepiece or tiktoken installed"). Here the kind comes
first: an existing path is a local checkpoint, checked file by file; anything else that is a valid hub
id is a hub repository, whose config.json is fetched (or found in the cache) before the weights are.
Every problem is a ``BadSource`` whose message names the source and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

EXAMPLE_HUB_ID = "EleutherAI/gpt-j-6b"
KSERVE_MOUNT = Path("/mnt/models")  # where KServe's storage initializer puts a storageUri's files
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SHOWN = 5  # names listed when a directory holds no checkpoint


class BadSource(Exception):
    """A model source that cannot be loaded: one line that names it and says how to fix it."""


def resolve(model: str) -> str:
    """The checked directory or hub id for ``from_pretrained``; raises ``BadSource``."""
    path = Path(model).expanduser()
    if os.path.lexists(path):
        check_directory(path, model)
        return str(path)
    if model.startswith(("/", ".", "~")) or not _is_repo_id(model):
        raise BadSource(
            f"--model {model}: no such directory. Give a directory holding a GPT-J checkpoint "
            f"(config.json, tokenizer, weights), a hub id such as {EXAMPLE_HUB_ID}, or tiny"
        )
    check_hub(model)
    return model


def check_directory(path: Path, model: str) -> None:
    """A local checkpoint: a readable directory with a GPT-J config.json, a tokenizer and weights."""
    if not path.exists():
        raise BadSource(f"--model {model}: a broken symbolic link (to {os.readlink(path)})")
    if not path.is_dir():
        raise BadSource(f"--model {model}: not a directory. Give the directory that holds config.json")
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise BadSource(
            f"--model {model}: cannot read the directory ({exc.strerror}); make it readable by uid {os.getuid()}"
        ) from exc
    if "config.json" not in names:
        raise BadSource(
            f"--model {model}: no config.json, so no Hugging Face checkpoint "
            f"({_contents(names)}). {_where_instead(path, names)}"
        )
    check_config(path / "config.json", model)
    if "tokenizer.json" not in names and not {"vocab.json", "merges.txt"} <= set(names):
        raise BadSource(
            f"--model {model}: no tokenizer (tokenizer.json, or vocab.json and merges.txt; "
            f"{_contents(names)}). Copy the tokenizer files of {EXAMPLE_HUB_ID} beside config.json"
        )
    _check_weights(path, names, model)


def check_config(config: Path, model: str) -> None:
    """config.json is JSON and describes GPT-J (this server runs no other architecture)."""
    try:
        data = json.loads(config.read_text())
    except OSError as exc:
        raise BadSource(f"--model {model}: cannot read config.json ({exc.strerror})") from exc
    except ValueError as exc:
        raise BadSource(f"--model {model}: config.json is not valid JSON ({exc}); an incomplete download?") from exc
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != "gptj":
        what = f'model_type "{model_type}"' if model_type else "no model_type"
        raise BadSource(
            f'--model {model}: config.json has {what}, not "gptj": this server runs GPT-J only. '
            f"Give a GPT-J checkpoint such as {EXAMPLE_HUB_ID}"
        )


def _check_weights(path: Path, names: list[str], model: str) -> None:
    """The weight files exist (every shard an index lists) and can be read (safetensors: a whole header)."""
    present = [name for name in SAFETENSORS + PICKLES if name in names]
    if not present:
        raise BadSource(
            f"--model {model}: no weights (model.safetensors, pytorch_model.bin, or a sharded "
            f"checkpoint's .index.json; {_contents(names)}). An incomplete download?"
        )
    chosen = present[0]  # transformers' own preference: safetensors first, unsharded first
    files = [chosen]
    if chosen.endswith(".index.json"):
        try:
            files = sorted(set(json.loads((path / chosen).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise BadSource(f"--model {model}: {chosen} is not a readable weight index ({exc})") from exc
    for name in files:
        _check_weight_file(path / name, name, model, listed_in=chosen if chosen != name else None)


def _check_weight_file(file: Path, name: str, model: str, listed_in: str | None) -> None:
    if not file.is_file():
        raise BadSource(f"--model {model}: {listed_in} lists {name}, which is missing. An incomplete download?")
    try:
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            # Reads the header only, and checks that the file is as long as the header says.
            with safe_open(str(file), framework="pt"):
                pass
        else:
            with open(file, "rb") as handle:
                handle.read(1)
    except OSError as exc:
        raise BadSource(
            f"--model {model}: cannot read {name} ({exc.strerror}); make it readable by uid {os.getuid()}"
        ) from exc
    except Exception as exc:  # safetensors raises its own SafetensorError (an Exception)
        raise BadSource(
            f"--model {model}: {name} is not a valid safetensors file ({exc}). An incomplete download?"
        ) from exc


def check_hub(repo_id: str) -> None:
    """A hub repository: its config.json (cached, or fetched now) says GPT-J. The weights follow in load."""
    from huggingface_hub import hf_hub_download

    try:
        config = hf_hub_download(repo_id, "config.json")
    except Exception as exc:
        line = _hub_problem(repo_id, exc)
        if line is None:
            raise
        raise BadSource(line) from exc
    check_config(Path(config), repo_id)


def one_line(model: str, exc: BaseException) -> str | None:
    """What a failed load says to an operator in one line, when it is the source's fault: a ``BadSource``,
    or a hub download that failed half-way (after config.json), or a ``--device cuda`` that cannot be
    honoured (device.BadDevice). None for anything else (a bug)."""
    from predictor.loading.device import BadDevice

    if isinstance(exc, (BadSource, BadDevice)):
        return str(exc)
    if model == "tiny" or os.path.lexists(Path(model).expanduser()) or not _is_repo_id(model):
        return None
    return _hub_problem(model, exc)


def _hub_problem(repo_id: str, exc: BaseException) -> str | None:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    head = f"--model {repo_id}: a hub id, but"
    local = "give a local directory (or a storageUri that KServe downloads to /mnt/models)"
    if any(isinstance(e, GatedRepoError) for e in chain):
        return f"{head} the repository is gated: accept its terms on the hub and set HF_TOKEN, or {local}"
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return f"{head} the hub has no such repository (or it is private: set HF_TOKEN). Check the id, or {local}"
    if not any(isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for e in chain):
        return None  # not the hub's "could not get the file": keep the original error
    if constants.HF_HUB_OFFLINE or any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return (
            f"{head} HF_HUB_OFFLINE is set and it is not in the cache ({constants.HF_HUB_CACHE}). "
            f"Unset HF_HUB_OFFLINE to download it, or {local}"
        )
    cause = chain[-1]
    return (
        f"{head} the hub ({constants.ENDPOINT}) cannot be reached ({type(cause).__name__}: {cause}) and "
        f"it is not in the cache. Let the pod reach the hub, or {local}"
    )


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _contents(names: list[str]) -> str:
    if not names:
        return "the directory is empty"
    names = sorted(names, key=lambda name: (name.startswith("."), name))  # hidden files last
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return "it holds " + ", ".join(names[:SHOWN]) + more


def _where_instead(path: Path, names: list[str]) -> str:
    """The fix: a subdirectory that holds the checkpoint, or what to point --model (or storageUri) at."""
    inside = [name for name in names if (path / name / "config.json").is_file()]
    if inside:
        return f"Its subdirectory {inside[0]} has one: --model {path / inside[0]}"
    if path == KSERVE_MOUNT:
        return "KServe's storageUri must name the directory that holds config.json, tokenizer and weights"
    return "Point --model at the directory that holds config.json, tokenizer and weights"

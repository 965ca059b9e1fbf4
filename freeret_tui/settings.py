"""One settings object, layered file < environment < CLI flags, and where freeret-tui keeps its data.

The data dir comes from platformdirs unless ``FREERET_DATA_DIR`` names another (tests isolate themselves that
way). The settings file is ``config.toml`` in that dir; environment variables are ``FREERET_<FIELD>``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from freeret_tui.engine.indexer import IndexOptions
from freeret_tui.engine.models.processors import DEFAULT_IMAGE_MAX_PIXELS
from freeret_tui.engine.scan import DEFAULT_EXCLUDE
from freeret_tui.engine.search import MODES
from freeret_tui.engine.session import SessionConfig
from freeret_tui.errors import UsageError

# The smallest image budget: 2x2 merged Qwen-VL patches (4 image tokens); below that a photo is a blur.
MIN_IMAGE_MAX_PIXELS = 56 * 56
DTYPES = ("auto", "float32", "bfloat16", "float16")


def data_dir() -> Path:
    """The directory holding the index database and the settings file (created on first use)."""
    override = os.environ.get("FREERET_DATA_DIR")
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("freeret-tui", appauthor=False))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)  # it holds the text of the person's documents: theirs alone (earlier versions: 0755)
    return path


SERVE_TOKEN_FILE = "serve-token"


def read_serve_token() -> str:
    """The token `freeret-tui serve` wrote in this data dir, or "" (a client on another machine sets
    FREERET_SERVE_TOKEN instead)."""
    try:
        return (data_dir() / SERVE_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class Settings:
    """Every knob a person can turn; defaults are what the measurements in the README chose."""

    model: str = "default"
    mode: str = "hybrid"
    # None: rerank when the model's preset is known to rerank usefully (see `freeret-tui models`).
    rerank: bool | None = None
    rerank_k: int = 10
    k: int = 10
    # Passages of one file among the hits (0: any number); the rest make room for other files.
    per_file: int = 2
    batch_size: int = 0  # 0: by device (see engine/models/devices.py: default_batch_size)
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    max_new_tokens: int = 256
    # Rerank probability under which the best hit is reported as "no good match".
    match_threshold: float = 0.5
    device: str = "auto"
    dtype: str = "auto"  # or float32, bfloat16, float16
    # The most pixels a photo is shown to the model at (its image tokens, the main cost of a photo); recorded in
    # the index like the model, since the vectors depend on it.
    image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS
    # Folder names never indexed, wherever they are (config.toml: a list; FREERET_EXCLUDE: comma-separated).
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    # The TUI's key bindings, `[keys]` in config.toml: binding id -> keys, e.g. ask = "ctrl+a" (ids: query, ask,
    # open, copy, failures, cancel, help, quit).
    keys: dict[str, str] = field(default_factory=dict)
    # The bearer token of a served model (--model serve:URL); FREERET_SERVE_TOKEN, else the token file that
    # `freeret-tui serve` wrote in this data dir (a server on this machine).
    serve_token: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for name in ("rerank_k", "k", "chunk_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.image_max_pixels < MIN_IMAGE_MAX_PIXELS:
            raise UsageError(f"image-max-pixels must be at least {MIN_IMAGE_MAX_PIXELS} (56x56)")
        if self.per_file < 0:
            raise UsageError("per-file must be at least 0 (0: any number of passages of one file)")
        if self.batch_size < 0:
            raise UsageError("batch-size must be at least 1 (or 0: chosen by device)")
        if self.dtype not in DTYPES:
            raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise UsageError("chunk-overlap must be at least 0 and smaller than chunk-tokens")
        if isinstance(self.exclude, str) or not all(isinstance(name, str) for name in self.exclude):
            raise UsageError("exclude must be a list of folder names")
        object.__setattr__(self, "exclude", tuple(self.exclude))  # a TOML list arrives as a list

    def with_overrides(self, values: dict[str, Any]) -> Settings:
        """A copy with every non-None value applied (how CLI flags land on top)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def session_config(self, named_model: str | None = None, named_image_max_pixels: int | None = None,
                       flush_items: int = IndexOptions.flush_items) -> SessionConfig:
        """What the engine's session is opened with. ``named_…``: given on the command line, so they win over the
        model and image budget the index was built with."""
        return SessionConfig(
            model=named_model or self.model, model_named=named_model is not None,
            image_max_pixels=named_image_max_pixels or self.image_max_pixels,
            image_budget_named=named_image_max_pixels is not None,
            device=self.device, dtype=self.dtype, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
            mode=self.mode, rerank=self.rerank, rerank_k=self.rerank_k, k=self.k, per_file=self.per_file,
            match_threshold=self.match_threshold, index=self.index_options(flush_items),
            serve_token=self.serve_token or read_serve_token(),
        )

    def index_options(self, flush_items: int = IndexOptions.flush_items) -> IndexOptions:
        """How the indexer chunks and batches, from these settings (``flush_items``: at most chunks per model call)."""
        return IndexOptions(self.chunk_tokens, self.chunk_overlap, frozenset(self.exclude), flush_items)


def _coerce(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool) or name == "rerank":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"FREERET_{name.upper()} must be true or false, not {raw!r}")
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(default, (int, float)):
        try:
            return type(default)(raw)
        except ValueError:
            raise UsageError(f"FREERET_{name.upper()} must be a number, not {raw!r}") from None
    return raw


def load_settings(cli: dict[str, Any] | None = None) -> Settings:
    """Settings from ``config.toml`` in the data dir, then ``FREERET_*`` variables, then ``cli`` values."""
    defaults = Settings()
    known = {f.name: getattr(defaults, f.name) for f in fields(Settings)}
    values: dict[str, Any] = {}
    config = data_dir() / "config.toml"
    if config.exists():
        try:
            table = tomllib.loads(config.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UsageError(f"{config}: not valid TOML ({err})") from None
        for key, value in table.items():
            if key == "keys":
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    raise UsageError(f'{config}: [keys] maps a binding id to keys, e.g. ask = "ctrl+a"')
                values["keys"] = dict(value)
                continue
            name = key.replace("-", "_")
            if name not in known:
                raise UsageError(f"{config}: unknown setting {key!r}")
            values[name] = value
    for name, default in known.items():
        if name == "keys":
            continue  # config.toml only
        raw = os.environ.get(f"FREERET_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, raw, default)
    values.update({k: v for k, v in (cli or {}).items() if v is not None})
    return Settings(**values)

"""Small frozen dataclasses that the pipeline stages exchange (never dicts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class Kind(str, Enum):
    """What an item is; decides its embedding prompt and how it is shown."""

    TEXT = "text"  # a passage of a text document
    IMAGE = "image"  # a photo or picture
    PAGE = "page"  # a rendered document page (scanned PDF)


@dataclass(frozen=True)
class PageImage:
    """Page ``page`` (1-based) of the PDF at ``pdf``, rendered to an image when the model reads it."""

    pdf: Path
    page: int


def title_of(path: Path) -> str:
    """A file's name as text for titles, prompts and the lexical index. The bytes of a name that are not UTF-8
    (an old archive) are read as Latin-1, where every byte is a character: "caf\\xe9.txt" is titled "café.txt"
    (the path itself keeps the exact bytes)."""
    return "".join(chr(ord(c) - 0xDC00) if "\udc80" <= c <= "\udcff" else c for c in path.name)


@dataclass(frozen=True)
class EncodedImage:
    """A picture already read by ``pictures.load_image`` (decoded, EXIF-rotated, downscaled), as lossless PNG bytes:
    how a picture travels to a model on another machine, which reads the same pixels and never opens a path."""

    data: bytes


# What the model sees as a picture: an image file, a rendered PDF page (a scan has no text layer), or the pixels
# of either sent from another machine.
Picture = Path | PageImage | EncodedImage


# Files whose passages' line numbers count lines of the text extracted from their markup, not of the file.
EXTRACTED_LINES = frozenset({".docx", ".xlsx", ".odt", ".ods", ".odp", ".epub", ".html", ".htm"})


@dataclass(frozen=True)
class Content:
    """One thing the model reads: text, an image, or both (an image with a caption or title)."""

    text: str = ""
    image: Picture | None = None

    @property
    def is_image(self) -> bool:
        return self.image is not None


@dataclass(frozen=True)
class Chunk:
    """A searchable piece of a file: one passage, one image or one page, with where it came from."""

    path: Path
    kind: Kind
    text: str = ""
    title: str = ""
    page: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    chunk_no: int = 0

    def content(self) -> Content:
        """What the model embeds of this chunk. A photo's text (its own caption and keywords, photo_meta.py) is
        not part of it: its vector is its pixels', as FreeRet embeds an image (a hit, reranked or answered over,
        carries the words beside the photo)."""
        if self.kind is Kind.TEXT:
            return Content(text=self.text)
        if self.kind is Kind.PAGE and self.page is not None:
            return Content(text=self.text, image=PageImage(self.path, self.page))
        return Content(image=self.path)

    @property
    def location(self) -> str:
        """Where a person finds the passage in the file as they open it: "p. 3", "slide 2", "sheet 1, rows 4-30",
        "lines 10-42"; nothing where the lines are those of text extracted from markup (a Word document, a web
        page), which no viewer numbers."""
        suffix = self.path.suffix.lower()
        if suffix == ".xlsx" and self.page is not None:  # extract.py reads sheets as pages, their lines as rows
            if self.line_start is None:
                return f"sheet {self.page}"
            rows = f"row {self.line_start}" if self.line_start == self.line_end else \
                f"rows {self.line_start}-{self.line_end}"
            return f"sheet {self.page}, {rows}"
        if self.page is not None:  # a PDF's page, or a deck's slide (extract.py reads slides as pages)
            return f"{'slide' if suffix == '.pptx' else 'p.'} {self.page}"
        if self.line_start is not None and suffix not in EXTRACTED_LINES:
            return f"lines {self.line_start}-{self.line_end}"
        return ""


@dataclass(frozen=True)
class Skip:
    """A file that was not indexed, and why (shown to the person, never a crash).

    ``failed``: the file is broken or unreadable; otherwise freeret-tui chose not to index it (type, model).
    """

    path: Path
    reason: str
    failed: bool = False


@dataclass(frozen=True)
class Hit:
    """One search result with the score of every stage it went through (None: stage not run)."""

    item_id: int
    path: Path
    kind: Kind
    text: str
    title: str
    location: str
    fused_score: float
    dense_score: float | None = None
    lexical_score: float | None = None
    rerank_prob: float | None = None
    image: Picture | None = None
    dated: float | None = None  # the file's date when it was indexed: a photo's taken time (EXIF), else its mtime
    copies: tuple[Path, ...] = ()  # other files with the same content, whose same passage this hit stands for

    def content(self) -> Content:
        return Content(text=self.text, image=self.image)


@dataclass(frozen=True)
class AnswerChunk:
    """A piece of a streamed answer; the last one has ``done`` set and the full list of cited hit numbers."""

    text: str
    done: bool = False
    citations: tuple[int, ...] = ()


@dataclass(frozen=True)
class IndexStats:
    """What one indexing run did."""

    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    items_added: int = 0
    skipped: tuple[Skip, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    files_removed: int = 0
    files_reread: int = 0  # of the unchanged: photos whose words and date were read again (sidecars, metadata)

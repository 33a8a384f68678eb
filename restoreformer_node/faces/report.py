"""What a restore run did, as values (for code) and as lines (for people).

The pipeline fills a `RunReport`; the nodes and the command line read its fields instead of
searching the wording of notes, and show `lines()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class RunReport:
    images: int  # images in the batch
    faces: int  # faces restored (failed faces not counted)
    images_without_faces: tuple[int, ...]  # indices of images passed through unchanged
    detector: str  # who found the faces ("" when unknown)
    precision: str  # the arithmetic that ran ("fp32", "bf16", "fp16"; "" when nothing ran)
    precision_note: str | None = None  # why it is not the precision that was asked for
    chunk_size: int = 0  # crops per network call (0 when nothing ran)
    compiled: str | None = None  # the torch.compile description when the compiled graph ran
    compile_note: str | None = None  # why it did not run compiled, when compiling was asked for
    no_face_line: str | None = None  # the line naming the images without faces
    notes: tuple[str, ...] = field(default_factory=tuple)  # everything else to tell (detection, loading)
    failed_faces: tuple[int, ...] = ()  # faces (indices into the Faces) kept original: non-finite output
    failed_images: tuple[int, ...] = ()  # the images those faces are in (each once)

    def with_notes(self, *notes: str) -> RunReport:
        """The same report with more notes (repeats dropped)."""
        return replace(self, notes=tuple(dict.fromkeys((*self.notes, *(n for n in notes if n)))))

    def with_failed_faces(self, failed: tuple[int, ...], faces) -> RunReport:
        """The same report with `failed` faces (indices into `faces`, a Faces) counted as failed:
        their restored output was not finite, so the original face was kept."""
        images = tuple(dict.fromkeys(faces.faces[i].image_index for i in failed))
        where = ", ".join(f"image {i}" for i in images)
        note = (
            f"{len(failed)} face{'s' if len(failed) != 1 else ''} failed ({where}): the network's output was "
            "not finite (NaN or infinity), so the original face was kept"
        )
        return replace(
            self, faces=self.faces - len(failed), failed_faces=failed, failed_images=images
        ).with_notes(note)

    def head(self, model_name: str = "") -> str:
        images = "image" if self.images == 1 else f"{self.images} images"
        text = f"restored {self.faces} face{'s' if self.faces != 1 else ''} in {images}"
        if self.faces:
            how = ", ".join(filter(None, [self.precision, self.compiled]))
            per_call = f"{self.chunk_size} crop{'s' if self.chunk_size != 1 else ''} per call"
            name = f" with {model_name}" if model_name else ""
            text += f"{name} ({how}, {per_call})"
        return text

    def lines(self, model_name: str = "") -> list[str]:
        """The head line, then each thing the user should know, once."""
        lines = [self.head(model_name)]
        if self.no_face_line:
            lines.append(f"{self.no_face_line}: passed through unchanged")
        for line in (self.precision_note, self.compile_note, *self.notes):
            if line and line not in lines:
                lines.append(line)
        return lines

"""The execution plan: which form of SAM's arithmetic runs where, decided once when the model loads.

SAM has several forms of the same maths here: the exact decoder and `FastDecoder`, transformers'
ViT attention and the blocked or folded one, the exact upscaler and the OpenCV one, bf16 with fp32
weights on CPU and whole-model casts on GPUs. The mode is chosen apart from the dtype: the fast
mode (`FastDecoder`, the OpenCV upscaler) runs on every device and dtype, float32 included, within
a pixel of the reference; the exact mode (asked for with `exact`, in float32) runs transformers'
decoder and upscaler, bit-equal to the reference recipe. `ExecutionPlan.choose` makes every such
decision in one place; loading.py (casts, attention), the engine (decoder, coordinates, upscaler, autocast) and
segment everything follow it. It is logged at start-up, reported by /health and shown in the UI.
dtypes are torch dtype names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionPlan:
    """What runs, on `device`.

    vit_weights / vit_compute: the image encoder's weights and the dtype it computes in (autocast
      where that differs from `prompt_encoder`, the dtype of every other weight).
    decoder: "exact", transformers' mask decoder with the per-image work cached (bit-identical to
      SamModel), or "fast", its rearranged form (`FastDecoder`) computing in `decoder_compute`.
    coordinates: dtype prompts are mapped to the model's frame in (float64 as SamProcessor; MPS has
      no float64).
    attention: "transformers" (as loaded), "blocked" (exact, a fraction of the peak memory; the
      global layers) or "folded" (the bias folded into the score matmul; CPU bf16, every layer).
    upscaler: "torch" (bit-equal to post_process_masks) or "opencv" (faster, within a pixel).
    mask_input: how a prompt with a mask input runs ("full model": SamModel.forward; the cached
      decoders have no mask path).
    everything_batch: prompts per decoder call in segment everything.
    everything_workers: decoder calls of segment everything (and then the masks it keeps) run side
      by side, each on one torch thread (1: one at a time, on the process's threads).
    why: why this mode was chosen (shown with the plan).
    encoder: what runs the ViT: "torch", or "openvino" (OpenVINO's CPU runtime computing in
      `vit_compute`; see modeling/openvino_encoder.py).
    """

    device: str
    vit_weights: str
    vit_compute: str
    prompt_encoder: str
    decoder: str
    decoder_compute: str
    coordinates: str
    attention: str
    upscaler: str
    mask_input: str
    everything_batch: int
    why: str
    everything_workers: int = 1
    encoder: str = "torch"

    @property
    def exact(self) -> bool:
        """Masks and scores bit-equal to the transformers reference recipe."""
        return self.decoder == "exact" and self.upscaler == "torch"

    @property
    def one_thread_per_click(self) -> bool:
        """A click's decode runs on one torch thread: a reduced-precision decode on a CPU takes ~10 ms
        and after an idle pause is no faster on two threads. A float32 decode, several times the
        work, keeps the process's threads (and the exact mode needs them: its float32 sums, and so
        its bit-equality with the reference, depend on the thread count)."""
        return self.decoder_compute != "float32"

    @staticmethod
    def check_mode(
        compute: str, exact: bool, device: str = "cpu", encoder: str | None = None, openvino: bool = False
    ) -> None:
        """Raise ValueError for a mode the plan cannot run: the exact mode in reduced precision, or
        OpenVINO asked for where it cannot run the encoder (not installed, not a CPU, the exact mode)."""
        if exact and compute != "float32":
            raise ValueError(
                f"the exact mode computes in float32, as the transformers recipe does, not {compute}; "
                "drop --dtype or --exact"
            )
        if encoder not in (None, "torch", "openvino"):
            raise ValueError(f"unknown encoder {encoder!r}; use torch or openvino")
        if encoder == "openvino":
            if exact:
                raise ValueError("the exact mode runs torch's image encoder (bit-equal to the recipe); drop --encoder")
            if device != "cpu":
                raise ValueError(f"OpenVINO runs the image encoder on CPUs here, not {device}; drop --encoder")
            if not openvino:
                raise ValueError("--encoder openvino needs the openvino package: pip install openvino")

    @classmethod
    def choose(
        cls,
        device: str,
        compute: str,
        sdpa: bool,
        exact: bool = False,
        encoder: str | None = None,
        openvino: bool = False,
        threads: int = 1,
    ) -> ExecutionPlan:
        """The plan for a device type ("cpu", "cuda", "mps"), a compute dtype name, whether the
        model was loaded with SDPA attention, whether the exact mode was asked for, and the
        process's torch threads.

        The fast mode (the default) runs `FastDecoder` in `compute` and the OpenCV upscaler; the
        exact mode runs transformers' decoder and upscaler, and only in float32 (the reference
        recipe's precision). Lower precision: on GPUs the whole model is cast; on CPU the prompt
        encoder and decoder keep fp32 weights (the fast decoder gets its own low-precision copy)
        and the ViT keeps its weights in that dtype under autocast, which holds layer norms and
        the residual stream in fp32.

        Segment everything decodes 64 prompts per call on GPUs. On a CPU its decoder calls are
        small ops that two threads share poorly: the fast mode decodes 2 prompts per call (more
        spill the caches) and runs one call per torch thread side by side, each on one thread
        (measured on 2 cores: 1.4x a call of 1 prompt on both threads, in float32 and bf16); the
        exact mode one prompt per call on all threads, as its float32 sums (and so its equality
        with the reference) depend on the thread count.

        The encoder: OpenVINO where asked for (`encoder`), or by default on a CPU computing in
        float32 outside the exact mode when the package is installed (`openvino`): there its ViT
        is about twice as fast as torch's (see modeling/openvino_encoder.py); torch elsewhere.
        """
        cls.check_mode(compute, exact, device, encoder, openvino)
        cpu, low = device == "cpu", compute != "float32"
        weights = "float32" if cpu else compute
        if cpu and low:
            attention = "folded"
        else:
            attention = "blocked" if sdpa else "transformers"
        return cls(
            device=device,
            vit_weights=compute if cpu and low else weights,
            vit_compute=compute,
            prompt_encoder=weights,
            decoder="exact" if exact else "fast",
            decoder_compute=compute,
            coordinates="float32" if device == "mps" else "float64",
            attention=attention,
            upscaler="torch" if exact else "opencv",
            mask_input="full model",
            everything_batch=(1 if exact else 2) if cpu else 64,
            everything_workers=max(1, threads) if cpu and not exact else 1,
            why="asked for (--exact)"
            if exact
            else "the default; --exact gives masks bit-equal to the transformers recipe",
            encoder=cls._encoder(cpu, compute, exact, encoder, openvino),
        )

    @staticmethod
    def _encoder(cpu: bool, compute: str, exact: bool, asked: str | None, openvino: bool) -> str:
        if asked is not None:
            return asked
        return "openvino" if cpu and compute == "float32" and not exact and openvino else "torch"

    def describe(self) -> str:
        """One line: what a reader of the log or the page needs to know."""
        vit = (
            f"ViT on OpenVINO computing in {self.vit_compute}"
            if self.encoder == "openvino"
            else f"ViT {self.vit_weights} weights computing in {self.vit_compute}, {self.attention} attention"
        )
        return (
            f"{self.device}: {vit}; {self.decoder} decoder in {self.decoder_compute}; {self.upscaler} upscaler; "
            f"{'exact mode (bit-equal to the transformers recipe)' if self.exact else 'fast mode'}: {self.why}"
        )

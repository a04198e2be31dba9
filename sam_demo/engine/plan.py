"""The execution plan: which form of SAM's arithmetic runs where, decided once when the model loads.

SAM has several forms of the same maths here: the exact decoder and `FastDecoder`, transformers'
ViT attention and the blocked or folded one, the exact upscaler and the OpenCV one, bf16 with fp32
weights on CPU and whole-model casts on GPUs. `ExecutionPlan.choose` makes every such decision in
one place; loading.py (casts, attention), the engine (decoder, coordinates, upscaler, autocast) and
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

    @property
    def exact(self) -> bool:
        """Masks and scores bit-equal to the transformers reference recipe."""
        return self.decoder == "exact" and self.upscaler == "torch"

    @classmethod
    def choose(cls, device: str, compute: str, sdpa: bool) -> ExecutionPlan:
        """The plan for a device type ("cpu", "cuda", "mps"), a compute dtype name, and whether the
        model was loaded with SDPA attention.

        float32 is the exact mode. Lower precision: on GPUs the whole model is cast; on CPU the
        prompt encoder and decoder keep fp32 weights (the fast decoder gets its own low-precision
        copy) and the ViT keeps its weights in that dtype under autocast, which holds layer norms
        and the residual stream in fp32. Segment everything decodes one prompt per call on CPU,
        where batching computes no faster and its intermediates cost page faults; 64 elsewhere.
        """
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
            decoder="fast" if low else "exact",
            decoder_compute=compute,
            coordinates="float32" if device == "mps" else "float64",
            attention=attention,
            upscaler="opencv" if low else "torch",
            mask_input="full model",
            everything_batch=1 if cpu else 64,
        )

    def describe(self) -> str:
        """One line: what a reader of the log or the page needs to know."""
        return (
            f"{self.device}: ViT {self.vit_weights} weights computing in {self.vit_compute}, {self.attention} "
            f"attention; {self.decoder} decoder in {self.decoder_compute}; {self.upscaler} upscaler; "
            f"{'exact (equal to the transformers recipe)' if self.exact else 'fast'}"
        )

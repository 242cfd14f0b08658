"""ComSL: speech blocks + length adapter + language blocks in one transformers ``PreTrainedModel``.

Data flow (paper §3.2):
  speech (B, C, T) -> speech encoder (B, T/2, Ds) -> length adapter (B, T/8, Dt)
  -> [src-lang embedding ; adapter output] as ``inputs_embeds`` of the text encoder -> text decoder,
  which starts from ``</s>`` and is forced to emit the target-language code first.
The same text encoder/decoder serve text input (MT), so ASR, ST, MT and the cross-modality objectives
share one set of language blocks.

``save_pretrained`` writes one self-contained directory (config with both sub-configs, safetensors);
``from_pretrained`` needs nothing else. Loading *pretrained backbones* into a fresh composite is a
separate step (``comsl.models.build``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from comsl.languages import TARGET_CODE
from comsl.models import attention
from comsl.models.beam_search import beam_search, unsupported_settings
from comsl.models.encodings import Encodings, Plan, encode_batch
from comsl.models.length_adapter import LengthAdapter
from comsl.models.speech_encoders import SPEECH_ENCODERS, build_speech_encoder
from comsl.models.text_models import LinearHead, build_text_model, decoder_start_id, linear_head, lm_logits
from comsl.parts import ADAPTER, OTHER, PARTS, SPEECH, TEXT_DECODER, TEXT_ENCODER


def _auto_sub_config(default_model_type: str):
    """Declares a sub-config of a composite config whose class follows the ``model_type`` saved in it
    (``default_model_type`` when there is none), for ``PreTrainedConfig.sub_configs_defaults``.

    transformers 5 declares such sub-configs with ``configuration_utils.SubConfigSpec``, which it does not
    export and has no public equivalent for (a plain config class there fixes the sub-config's class;
    ``AutoConfig`` alone has no default type). This is its one use, so an upstream change breaks here, once.
    """
    try:
        from transformers.configuration_utils import SubConfigSpec
    except ImportError as err:
        import transformers

        raise ImportError(
            f"ComSLConfig declares its speech and text sub-configs with transformers.configuration_utils."
            f"SubConfigSpec, which transformers {transformers.__version__} lacks: install the transformers "
            "version pyproject.toml allows") from err
    return SubConfigSpec(config_class=AutoConfig, model_type=default_model_type)


class ComSLConfig(PreTrainedConfig):
    r"""Config of the composite: the two backbone configs plus the adapter's and the run's shape facts.

    speech_config / text_config: configs of the speech encoder and of the text encoder-decoder.
    speech_encoder_type: whisper | wav2vec2 | hubert | w2v_bert.
    text_model_type: mbart | m2m100 | nllb.
    adapter_ffn_mult / adapter_dropout: length adapter FFN width multiple and dropout.
    max_speech_seconds: longest accepted utterance.
    target_lang_code: mBART-50-style code of the translation target.
    ctc_vocab_size: size of the CTC head on the speech encoder (0 = no head; mSLAM objective).
    match_head: add the speech-text matching classifier (SLAM objective).
    """

    model_type = "comsl"
    sub_configs_defaults = {"speech_config": _auto_sub_config("whisper"), "text_config": _auto_sub_config("mbart")}
    speech_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    speech_encoder_type: str = "whisper"
    text_model_type: str = "mbart"
    adapter_ffn_mult: int = 4
    adapter_dropout: float = 0.1
    max_speech_seconds: float = 11.0
    target_lang_code: str = TARGET_CODE
    ctc_vocab_size: int = 0
    match_head: bool = False
    is_encoder_decoder: bool = True

    @property
    def speech_frontend(self) -> str:
        """Input features the speech encoder expects: whisper_log_mel | waveform | w2v_bert_fbank."""
        return SPEECH_ENCODERS[self.speech_encoder_type][1]

    @property
    def num_mel_bins(self) -> int | None:
        """Mel bins of a Whisper front end (None for other encoders)."""
        return getattr(self.speech_config, "num_mel_bins", None) if self.speech_encoder_type == "whisper" else None


@dataclass
class SpeechEncoding:
    """Output of the speech blocks and adapter, shared by every speech objective of a batch."""

    hidden: torch.Tensor
    """Adapter output (B, T', D_text)."""
    mask: torch.Tensor
    """(B, T') 1 on real positions."""
    speech_hidden: torch.Tensor
    """Speech-encoder output (B, T, D_speech) (CTC reads it)."""
    speech_mask: torch.Tensor
    """(B, T) 1 on real positions."""


def padding_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    """``mask`` (B, L) when it has padding, else None: without a mask SDPA takes its fused kernel."""
    return None if bool(mask.all()) else mask


class ComSLModel(PreTrainedModel):
    """The composite speech-language model. Construction does no I/O (random init)."""

    config_class = ComSLConfig
    base_model_prefix = "comsl"
    main_input_name = "speech"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: ComSLConfig):
        super().__init__(config)
        self.speech_encoder = build_speech_encoder(
            config.speech_encoder_type, config.speech_config, config.max_speech_seconds
        )
        self.text_model = build_text_model(config.text_model_type, config.text_config)
        text_dim = config.text_config.d_model
        self.adapter = LengthAdapter(
            self.speech_encoder.hidden_size, text_dim, config.adapter_ffn_mult, config.adapter_dropout
        )
        # optional heads of the seed papers' objectives (trained with the adapter's settings)
        self.ctc_head = (nn.Linear(self.speech_encoder.hidden_size, config.ctc_vocab_size)
                         if config.ctc_vocab_size else None)
        self.match_head = nn.Linear(text_dim, 1) if config.match_head else None
        self._speech_frozen = False
        self.tokenizer = None  # set by the builder or from_pretrained; saved with the model
        self.post_init()
        if config._attn_implementation in (None, "sdpa"):  # SDPA but for short 16-bit CPU training attention
            config._attn_implementation = attention.NAME

    # ------------------------------------------------------------------ self-contained directories

    def save_pretrained(self, save_directory, *args, tokenizer=None, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the processor (front end settings + tokenizer:
        ``tokenizer`` or ``self.tokenizer``), so the directory needs nothing else to translate."""
        from comsl.data.processor import ComSLProcessor  # data sits below models; imported lazily

        super().save_pretrained(save_directory, *args, **kwargs)
        tokenizer = tokenizer if tokenizer is not None else getattr(self, "tokenizer", None)
        if tokenizer is not None:
            ComSLProcessor.for_model(self.config, tokenizer).save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a saved composite; its processor, when saved alongside (a tokenizer is there), becomes
        ``model.processor`` and its tokenizer ``model.tokenizer`` (None both otherwise)."""
        from comsl.data.processor import ComSLProcessor  # data sits below models; imported lazily

        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = Path(pretrained_model_name_or_path)
        has_tokenizer = (path / "tokenizer.json").is_file() or (path / "sentencepiece.bpe.model").is_file()
        model.processor = (ComSLProcessor.from_pretrained(path, speech_frontend=model.config.speech_frontend,
                                                          num_mel_bins=model.config.num_mel_bins)
                           if has_tokenizer else None)
        model.tokenizer = model.processor.tokenizer if has_tokenizer else None
        return model

    # ------------------------------------------------------------------ parts and switches

    def part_of(self, name: str) -> str:
        """Which part a parameter belongs to: speech_encoder | adapter | text_encoder | text_decoder.

        The shared token embedding counts as ``text_encoder`` (the decoder and LM head are tied to it);
        the optional CTC and matching heads count as ``adapter`` (new, randomly initialised parts).
        """
        if name.startswith("speech_encoder."):
            return SPEECH
        if name.startswith(("adapter.", "ctc_head.", "match_head.")):
            return ADAPTER
        if name.startswith("text_model."):
            rest = name[len("text_model."):]
            if rest.startswith("model.decoder.") or rest.startswith("lm_head") or rest == "final_logits_bias":
                return TEXT_DECODER
            return TEXT_ENCODER
        return OTHER

    def set_trainable(self, part: str, trainable: bool) -> None:
        """Switch ``requires_grad`` of one part. The shared embedding stays trainable while either
        text part is. Raises ValueError for an unknown part."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; parts are {', '.join(PARTS)}")
        shared = self.text_model.get_input_embeddings().weight
        for name, param in self.named_parameters():
            if self.part_of(name) == part and param is not shared:
                param.requires_grad_(trainable)
        if part in (TEXT_ENCODER, TEXT_DECODER):
            # embeddings follow the text blocks: frozen only when both are frozen
            enc = any(p.requires_grad for n, p in self.named_parameters()
                      if self.part_of(n) == TEXT_ENCODER and p is not shared)
            dec = any(p.requires_grad for n, p in self.named_parameters()
                      if self.part_of(n) == TEXT_DECODER and p is not shared)
            shared.requires_grad_(enc or dec)
        if self.config.speech_encoder_type == "whisper":
            # the positional table is fixed in Whisper (sinusoids); never train it
            self.speech_encoder.encoder.embed_positions.weight.requires_grad_(False)

    def set_speech_frozen(self, frozen: bool) -> None:
        """Run the speech blocks without gradients (trainer's freezing schedule; saves their backward)."""
        self._speech_frozen = frozen

    # ------------------------------------------------------------------ building blocks

    @property
    def text_encoder(self) -> nn.Module:
        return self.text_model.get_encoder()

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Scaled token embeddings (B, L) -> (B, L, D_text), exactly what the text encoder adds positions to."""
        return self.text_model.get_input_embeddings()(ids)

    def encode_speech(self, speech: torch.Tensor, speech_mask: torch.Tensor) -> SpeechEncoding:
        """Speech blocks + adapter. speech (B, C, T) log-mel or (B, S) waveform, mask (B, T|S)."""
        no_grad = self._speech_frozen and self.training
        with torch.set_grad_enabled(torch.is_grad_enabled() and not no_grad):
            speech_hidden, s_mask = self.speech_encoder(speech, speech_mask)
        hidden, mask = self.adapter(speech_hidden, s_mask)
        return SpeechEncoding(hidden, mask, speech_hidden, s_mask)

    @contextlib.contextmanager
    def sparse_embedding_grads(self, enabled: bool = True):
        """Within: lookups of the token embedding tied to the LM head give sparse gradients (their rows
        only, not a zero-filled vocabulary x dimension tensor per lookup). Only for a forward whose loss
        is sure to give the head its dense gradient too (the tied weight's gradient then sums to dense,
        what optimizers, DDP and ZeRO expect); not under ZeRO-3, whose weight is a partition. CPU only:
        there the zero-filled gradients and their sums are memory-bound work of the step."""
        weight = self.text_model.lm_head.weight
        eligible = enabled and weight.device.type == "cpu" and weight.requires_grad and not hasattr(weight, "ds_id")
        embeddings = [m for m in self.text_model.modules()
                      if isinstance(m, nn.Embedding) and m.weight is weight] if eligible else []
        for m in embeddings:
            m.sparse = True
        try:
            yield
        finally:
            for m in embeddings:
                m.sparse = False

    def speech_inputs_embeds(
        self, enc: SpeechEncoding, src_lang_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[src-lang embedding ; adapter output]: (B, 1 + T', D_text) and its mask (B, 1 + T')."""
        lang = self.embed_tokens(src_lang_ids)[:, None, :]
        embeds = torch.cat([lang.to(enc.hidden.dtype), enc.hidden], dim=1)
        mask = torch.cat([enc.mask.new_ones(enc.mask.shape[0], 1), enc.mask], dim=1)
        return embeds, mask

    def encode_embeds(
        self, inputs_embeds: torch.Tensor, mask: torch.Tensor, output_hidden_states: bool = False
    ) -> BaseModelOutput:
        """Text encoder over ``inputs_embeds`` (B, L, D) with mask (B, L)."""
        return self.text_encoder(inputs_embeds=inputs_embeds, attention_mask=padding_or_none(mask),
                                 output_hidden_states=output_hidden_states)

    def encode_text(self, input_ids: torch.Tensor, mask: torch.Tensor, output_hidden_states: bool = False
                    ) -> BaseModelOutput:
        """Text encoder over token ids ``[src_lang, x.., </s>]`` (B, L)."""
        return self.encode_embeds(self.embed_tokens(input_ids), mask, output_hidden_states)

    def decode_hidden(
        self, decoder_input_ids: torch.Tensor, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced decoder states: ids (B, L) over encoder states (B, S, D) -> (B, L, D), before the
        LM head (so callers can project only the positions they score)."""
        return self.text_model.get_decoder()(
            input_ids=decoder_input_ids, encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=padding_or_none(encoder_mask), use_cache=False,
        ).last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head (+ mBART's final logits bias) over decoder states (..., D) -> (..., V)."""
        return lm_logits(self.text_model, hidden)

    def loss_head(self) -> LinearHead | Callable[[torch.Tensor], torch.Tensor]:
        """The LM head for the cross-entropy: its tensors (the fused loss), unless ZeRO-3 partitions the
        weight, which only a module call gathers: then ``lm_logits``."""
        head = linear_head(self.text_model)
        return self.lm_logits if hasattr(head.weight, "ds_id") else head

    def teacher_forcing(self, target_ids: torch.Tensor, target_mask: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[lang, y.., </s>, pad..]`` (B, L) -> decoder inputs ``[</s>, lang, y..]`` and labels
        ``[-100, y.., </s>, -100..]``: the forced language token and padding are not scored."""
        start = decoder_start_id(self.config.text_config)
        dec_in = torch.cat([target_ids.new_full((target_ids.shape[0], 1), start), target_ids[:, :-1]], dim=1)
        labels = target_ids.masked_fill(target_mask == 0, -100)
        labels[:, 0] = -100
        return dec_in, labels

    # ------------------------------------------------------------------ forward / generate

    def forward(self, batch: dict, plan: Plan) -> Encodings:
        """The training forward: the passes ``plan`` asks for over ``batch`` (see ``comsl.models.encodings``)
        -> decoder states before the LM head, labels, ERM states, CTC logits, matching scores."""
        return encode_batch(self, batch, plan)

    def _generate(self, encoder_hidden, encoder_mask, tgt_lang_id: int, num_beams: int,
                  max_new_tokens: int, length_penalty: float, use_hf_generate: bool = False,
                  sync=None, **kwargs) -> torch.Tensor:
        tc = self.config.text_config
        start = decoder_start_id(tc)
        gen_cfg = self.text_model.generation_config
        # comsl's beam search (same tokens, faster) unless asked for, or settings it does not reproduce
        if not use_hf_generate and not kwargs and not unsupported_settings(gen_cfg):
            return beam_search(
                self.text_model, encoder_hidden, encoder_mask, decoder_start_id=start,
                forced_bos_id=int(tgt_lang_id), eos_id=tc.eos_token_id, pad_id=tc.pad_token_id,
                forced_eos_id=gen_cfg.forced_eos_token_id, num_beams=num_beams,
                max_new_tokens=max_new_tokens, length_penalty=length_penalty, sync=sync,
            )
        # one generation config (copied, so the model's stays as saved) rather than config + kwargs;
        # max_length off so max_new_tokens alone bounds the length; the beam-only settings only with beams
        # (greedy ignores them, and generate warns about them)
        gen_cfg = copy.deepcopy(gen_cfg)
        beams = num_beams > 1
        gen_cfg.update(decoder_start_token_id=start, forced_bos_token_id=int(tgt_lang_id),
                       bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id, pad_token_id=tc.pad_token_id,
                       num_beams=num_beams, max_new_tokens=max_new_tokens, max_length=None,
                       length_penalty=length_penalty if beams else 1.0, early_stopping=True if beams else None,
                       do_sample=False)
        unknown = gen_cfg.update(**kwargs)
        if unknown:
            raise TypeError(f"not generation settings: {', '.join(sorted(unknown))}")
        return self.text_model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                                        attention_mask=encoder_mask, generation_config=gen_cfg,
                                        synced_gpus=sync is not None)

    @torch.no_grad()
    def generate_speech(self, speech: torch.Tensor, speech_mask: torch.Tensor, src_lang_ids: torch.Tensor,
                        tgt_lang_id: int, num_beams: int = 5, max_new_tokens: int = 128,
                        length_penalty: float = 1.0, use_hf_generate: bool = False, sync=None,
                        **kwargs) -> torch.Tensor:
        """Beam search from speech: returns token ids (B, L) starting ``[</s>, tgt_lang, ...]``.

        ``tgt_lang_id`` = ``en_XX`` for ST, the source-language code for ASR. Decoding uses
        ``comsl.models.beam_search`` (token-identical to transformers' ``generate``, faster);
        ``use_hf_generate=True`` or extra ``generate`` keyword arguments use transformers' ``generate``.
        ``sync``: lock-step decoding across ranks (ZeRO-3), see ``beam_search``.
        """
        embeds, mask = self.speech_inputs_embeds(self.encode_speech(speech, speech_mask), src_lang_ids)
        enc = self.encode_embeds(embeds, mask)
        return self._generate(enc.last_hidden_state, mask, tgt_lang_id, num_beams, max_new_tokens,
                              length_penalty, use_hf_generate, sync, **kwargs)

    @torch.no_grad()
    def generate_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tgt_lang_id: int,
                      num_beams: int = 5, max_new_tokens: int = 128, length_penalty: float = 1.0,
                      use_hf_generate: bool = False, sync=None, **kwargs) -> torch.Tensor:
        """Beam search from text ``[src_lang, x.., </s>]`` (B, L) (MT); decoder and ``sync`` as in
        ``generate_speech``."""
        enc = self.encode_text(input_ids, attention_mask)
        return self._generate(enc.last_hidden_state, attention_mask, tgt_lang_id, num_beams,
                              max_new_tokens, length_penalty, use_hf_generate, sync, **kwargs)


AutoConfig.register("comsl", ComSLConfig)

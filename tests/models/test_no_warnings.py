"""Our calls into transformers are current: training and decoding a tiny model raise no warning from it."""

from __future__ import annotations

import pytest

from tests.helpers import LENGTHS, speech_batch, speech_input, task_loss, transformers_warnings


@pytest.mark.parametrize("text", ["mbart", "m2m100"])
def test_train_step_and_decoding_raise_no_transformers_warning(text, make_model, tokenizer):
    model = make_model("whisper", text)
    batch = speech_batch(tokenizer, *speech_input("whisper", LENGTHS["whisper"]))
    en = tokenizer.convert_tokens_to_ids("en_XX")
    with transformers_warnings() as caught:
        model.train()
        task_loss(tokenizer)(model, batch).backward()
        model.eval()
        for hf in (False, True):
            for beams in (1, 3):
                for lp in (1.0, 0.6):  # a length penalty asked for, as `comsl evaluate --length-penalty` does
                    model.generate_speech(batch["speech"], batch["speech_mask"], batch["src_lang_ids"], en,
                                          num_beams=beams, max_new_tokens=4, length_penalty=lp, use_hf_generate=hf)
                    model.generate_text(batch["transcript_ids"], batch["transcript_mask"], en, num_beams=beams,
                                        max_new_tokens=4, length_penalty=lp, use_hf_generate=hf)
    assert caught == []

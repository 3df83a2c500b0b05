"""The verdicts of the checks themselves, on hand-made references."""

import torch

from xgblora_engine.export import verify as V


class Tok:
    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def reference(greedy, stopped, margins=None, chat=True):
    prompts = [V.PromptReference(f"p{i}", f"p{i}", [1, 2], torch.zeros(2, 4), g, s, m or [1.0] * len(g))
               for i, (g, s, m) in enumerate(zip(greedy, stopped, margins or [None] * len(greedy)))]
    return V.Reference(prompts, [9], 5, chat=chat)


def test_stops_fails_where_the_merged_model_stops_and_the_export_does_not():
    ref = reference([[3, 9], [4, 9]], [True, True])
    check = V.check_stops("stops", [([3, 9], True), ([4, 4, 4, 4, 4], False)], ref, Tok(), "llama.cpp")
    assert not check.ok and "does not end answers the merged model ends: 'p1'" in check.detail


def test_stops_notes_a_prompt_the_fine_tuned_model_itself_rambles_on():
    ref = reference([[3, 9], [4, 4, 4, 4, 4]], [True, False])
    check = V.check_stops("stops", [([3, 9], True), ([4, 4, 4, 4, 4], False)], ref, Tok(), "transformers")
    assert check.ok and "1/2 answers end" in check.detail and "does not end these answers either" in check.detail


def test_stops_fails_when_nothing_ever_ends():
    ref = reference([[4] * 5, [4] * 5], [False, False])
    check = V.check_stops("stops", [([4] * 5, False), ([4] * 5, False)], ref, Tok(), "PEFT")
    assert not check.ok and "no answer ends" in check.detail and "training targets" in check.detail


def test_stops_is_skipped_without_a_chat_template():
    ref = reference([[4] * 5], [False], chat=False)
    check = V.check_stops("stops", [([4] * 5, False)], ref, Tok(), "PEFT")
    assert check.ok and check.skipped


def test_greedy_divergence_is_accepted_only_at_a_near_tie():
    ref = reference([[3, 5, 9]], [True], margins=[[2.0, 0.1, 3.0]])
    near_tie = V.check_same_greedy("greedy", [[3, 6, 9]], ref, Tok(), [0.08], "llama.cpp")
    assert near_tie.ok and "diverges at token 2" in near_tie.detail and "0/1" in near_tie.detail
    real = V.check_same_greedy("greedy", [[4, 6, 9]], ref, Tok(), [0.08], "llama.cpp")
    assert not real.ok and "diverges at token 1" in real.detail and "margin 2" in real.detail
    same = V.check_same_greedy("greedy", [[3, 5, 9]], ref, Tok(), [0.0], "llama.cpp")
    assert same.ok and same.detail.startswith("1/1 answers token-for-token identical")


def test_logits_tolerance_scales_with_the_largest_logit_and_catches_nan():
    ref = reference([[9]], [True])
    ref.prompts[0].logits = torch.tensor([[0.0, 20.0], [1.0, -5.0]])
    close = V.check_logits("logits", [ref.prompts[0].logits + 0.01], ref, 1e-3, "m")
    assert close.ok and "tolerance 0.02" in close.detail
    assert not V.check_logits("logits", [ref.prompts[0].logits + 0.05], ref, 1e-3, "m").ok
    assert not V.check_logits("logits", [ref.prompts[0].logits * float("nan")], ref, 1e-3, "m").ok
    assert not V.check_logits("logits", [torch.zeros(3, 2)], ref, 1e-3, "m").ok

"""An example input given as named arguments (a tokenizer's output, a Hugging Face batch) works wherever a tensor
does: compose, layer costs, profile, calibration, weight readers and latency, with the same results as the same
input passed by position."""

import pytest
import torch
from torch import nn

import lorita
from lorita.latency import at_batch, best_layout, compare_latency, latency_budget, measure_latency
from lorita.probe import ModelInput, model_input, weight_readers
from lorita.profile import profile
from lorita.spectra import layer_costs
from lorita.whiten import collect_grams


class Tagger(nn.Module):
    """A token model taking ``input_ids`` and an ``attention_mask`` of the same shape, as transformers' do; its
    ``gate`` is used through its weight only."""

    def __init__(self, vocab: int = 11, width: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix, self.gate, self.head = nn.Linear(width, 16), nn.Linear(width, width), nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask=None, scale: float = 1.0, labels=None):
        if attention_mask is None or attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}")
        h = self.embed(input_ids) * attention_mask[..., None] * scale
        h = torch.sigmoid(nn.functional.linear(h, self.gate.weight, self.gate.bias)) * h
        return self.head(torch.relu(self.mix(h)))


def named(batch: int = 2, tokens: int = 5) -> dict:
    ids = torch.arange(batch * tokens).reshape(batch, tokens) % 11
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "scale": 0.5}


def positional(batch: int = 2, tokens: int = 5) -> tuple:
    call = named(batch, tokens)
    return call["input_ids"], call["attention_mask"], call["scale"]


def test_a_dict_is_called_by_keyword_and_its_lead_is_the_first_tensor():
    call = model_input(named())
    assert call.args == () and list(call.kwargs) == ["input_ids", "attention_mask", "scale"]
    assert call.lead is call.kwargs["input_ids"] and call.batch_size == 2
    torch.manual_seed(0)
    net = Tagger()
    torch.testing.assert_close(call(net), net(*positional()))
    assert model_input(call) is call


def test_a_batch_encoding_from_transformers_is_taken_as_named_arguments():
    transformers = pytest.importorskip("transformers")
    encoding = transformers.BatchEncoding({"input_ids": torch.tensor([[1, 2, 3]]),
                                           "attention_mask": torch.tensor([[1, 1, 1]])})
    call = model_input(encoding)
    assert sorted(call.kwargs) == ["attention_mask", "input_ids"] and call.lead.shape == (1, 3)


@pytest.mark.parametrize("bad, says", [({1: torch.zeros(2)}, "keys must be strings"),
                                        ({"input_ids": [[1, 2, 3]]}, "return_tensors='pt'"),
                                        ({}, "holds no tensor"),
                                        ([torch.zeros(2)], "got list")])
def test_inputs_that_name_no_tensor_are_refused_with_the_fix(bad, says):
    with pytest.raises(lorita.LoritaError, match=says.replace("(", r"\(").replace(")", r"\)")):
        model_input(bad)


def test_a_model_that_fails_on_named_arguments_names_them():
    with pytest.raises(lorita.LoritaError, match=r"input_ids=shape \(2, 5\) \(torch.int64\), attention_mask=shape "
                                                 r"\(2, 4\).*ValueError"):
        lorita.profile(Tagger(), {"input_ids": torch.zeros(2, 5, dtype=torch.long),
                                  "attention_mask": torch.ones(2, 4)})


def test_compose_with_named_arguments_leaves_the_weight_read_layer_plain_as_by_position():
    with pytest.warns(lorita.LoritaWarning, match="gate: its parent reads"):
        by_name = lorita.compose(Tagger(), depth=2, example_input=named())
    with pytest.warns(lorita.LoritaWarning, match="gate: its parent reads"):
        by_position = lorita.compose(Tagger(), depth=2, example_input=positional())
    plain = {name for name, m in by_name.named_modules() if type(m) is nn.Linear}
    assert plain == {name for name, m in by_position.named_modules() if type(m) is nn.Linear} == {"gate"}
    net = Tagger()
    assert list(weight_readers(net, named(), {"gate": net.gate, "mix": net.mix})) == ["gate"]


def test_costs_and_profile_on_named_arguments_equal_those_by_position():
    net = Tagger()
    assert layer_costs(net, named(), "macs") == layer_costs(net, positional(), "macs")
    by_name, by_position = profile(net, named(3)), profile(net, positional(3))
    assert (by_name.params, by_name.macs, by_name.batch_size) == (by_position.params, by_position.macs, 3)
    assert by_name.macs == 3 * 5 * (8 * 16 + 8 * 8 + 16 * 3)  # mix, the read gate, head: per token


def test_an_unbatched_sequence_counts_as_one_example_of_its_tokens():
    net, ids = Tagger(), torch.arange(6) % 11  # one sequence of 6 tokens, no batch dimension
    unbatched = layer_costs(net, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "macs")
    assert unbatched == layer_costs(net, {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None]},
                                    "macs")
    assert unbatched[0]["mix"].positions == 6 and unbatched[1] == 6 * 8 * 8  # the read gate's MACs, per example


def test_calibration_batches_may_be_dicts():
    net = Tagger()
    by_name = collect_grams(net, [named(), named(3)], ["mix", "head"])
    by_position = collect_grams(net, [positional(), positional(3)], ["mix", "head"])
    assert by_name.rows == by_position.rows == {"mix": 25, "head": 25}
    for name in ("mix", "head"):
        torch.testing.assert_close(by_name[name], by_position[name])


def test_a_deployment_batch_repeats_the_mask_and_labels_beside_the_token_ids():
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    call = at_batch({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids, "scale": 0.5}, 4)
    assert [tuple(call.kwargs[k].shape) for k in ("input_ids", "attention_mask", "labels")] == [(4, 5)] * 3
    assert call.kwargs["scale"] == 0.5 and torch.equal(call.kwargs["labels"], ids.expand(4, 5))
    by_position = at_batch(positional(1, 5), 4)
    assert [tuple(a.shape) for a in by_position.args[:2]] == [(4, 5), (4, 5)]


def test_labels_put_first_are_not_taken_for_the_batch():
    call = {"labels": torch.zeros(4, dtype=torch.long), **named(4, 5)}  # transformers' default collator's order
    assert model_input(call).key == "input_ids" and model_input(call).batch_size == 4
    net = Tagger()
    assert layer_costs(net, call, "macs") == layer_costs(net, named(4, 5), "macs")
    assert profile(net, call).batch_size == 4


@pytest.mark.parametrize("ids", [torch.arange(6) % 11, torch.zeros((0, 6), dtype=torch.long)])
def test_timing_at_a_batch_needs_a_batched_example(ids):
    with pytest.raises(lorita.LoritaError, match=r"example_input\['input_ids'\] .*(unbatched example|holds no)"):
        at_batch({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 4)


def calls_the_model(model, x):
    """A fake clock that runs the model once (a model that fails on its input fails here) and returns its weights'
    count."""
    model(x)
    return float(sum(p.numel() for p in model.parameters()))


def test_a_latency_budget_runs_on_named_arguments_at_a_deployment_batch():
    net = Tagger(width=64)
    found = latency_budget(net, 0.9, named(1, 5), timer=calls_the_model, batch=4)
    assert found.measured <= 0.9 and set(found.ranks) <= {"mix", "head"}
    assert found.to_dict()["batch"] == 4
    seconds, fractions = compare_latency({"a": net, "b": Tagger(width=64)}, named(), reference="a",
                                         timer=calls_the_model, repeats=1)
    assert fractions == {"a": 1.0, "b": 1.0} and set(measure_latency({"a": net}, named(), repeats=1)) == {"a"}


def test_a_model_failing_while_timed_names_the_input():
    ids = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(lorita.LoritaError, match=r"failed on the input it is timed on \(model 'a'\), arguments of "
                                                 r"input_ids=shape \(1, 5\).*ValueError: attention_mask must have"):
        measure_latency({"a": Tagger()}, {"input_ids": ids, "attention_mask": torch.ones(1, 4)}, repeats=1)


def test_a_deployment_batch_keeps_the_layout_and_the_size_limit_of_every_argument():
    image = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    batched = at_batch(image, 4).lead
    assert batched.shape == (4, 3, 8, 8) and batched.is_contiguous(memory_format=torch.channels_last)
    call = model_input(named(4, 5))
    assert at_batch(call, 4) is call  # already at that batch: as given
    big = {"input_ids": torch.zeros(1, 2, dtype=torch.long), "pixel_values": torch.zeros(1, 3, 512, 512)}
    with pytest.raises(lorita.LoritaError, match="repeats the example's other arguments"):
        at_batch(big, 2**16)


def test_layout_messages_name_the_argument_they_judged():
    images = {"pixel_mask": torch.ones(1, 8, 8), "pixel_values": torch.randn(1, 3, 8, 8)}
    assert model_input(images).key == "pixel_values"
    with pytest.raises(lorita.LoritaError, match=r"example_input\['input_ids'\] must be N x C x H x W"):
        best_layout(Tagger(), named(), repeats=1)


def test_a_model_input_built_directly_is_checked_and_keeps_its_own_arguments():
    kwargs = named()
    call = ModelInput(kwargs=kwargs)
    kwargs["input_ids"] = torch.zeros(9, 9)
    assert call.lead.shape == (2, 5)
    with pytest.raises(lorita.LoritaError, match="holds no tensor"):
        ModelInput()
    with pytest.raises(lorita.LoritaError, match="key='mask' names no tensor"):
        ModelInput(kwargs=named(), key="mask")
    with pytest.raises(lorita.LoritaError, match="leave key out"):
        ModelInput(positional(), key="input_ids")


def test_a_tokenizers_output_profiles_and_composes_a_transformers_model():
    transformers = pytest.importorskip("transformers")
    from tiny_lm import tiny_llama

    model = tiny_llama(layers=1)
    ids = torch.tensor([[5, 6, 7, 8]])
    encoding = transformers.BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert profile(model, encoding).macs == profile(model, ids).macs > 0
    with pytest.warns(lorita.LoritaWarning, match="lm_head: weight tied"):
        composed = lorita.compose(model, depth=2, init="preserve", example_input=encoding)
    torch.testing.assert_close(lorita.merge(composed)(**encoding).logits, model(**encoding).logits)

"""The sigmoid-form tanh GELU is GPT-2's GELU: same values and gradients up to float rounding."""
import torch

from fgalign.models.activations import GELUTanhSigmoid, fuse_gelu, gelu_tanh


def test_gelu_tanh_matches_torch_values_and_gradients():
    x = (torch.randn(4096) * 4).requires_grad_()
    ours = gelu_tanh(x)
    theirs = torch.nn.functional.gelu(x, approximate="tanh")
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    g = torch.randn(4096)
    (grad_ours,) = torch.autograd.grad(ours, x, g)
    (grad_theirs,) = torch.autograd.grad(theirs, x, g)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the graph-free path
        torch.testing.assert_close(gelu_tanh(x), theirs.detach(), rtol=1e-6, atol=1e-6)


def test_gelu_tanh_gradcheck_and_half_precision_falls_back():
    assert torch.autograd.gradcheck(gelu_tanh, (torch.randn(40, dtype=torch.double, requires_grad=True),))
    big = torch.tensor([-300.0, 300.0], dtype=torch.float16)  # x² overflows float16
    assert torch.equal(gelu_tanh(big), torch.nn.functional.gelu(big, approximate="tanh"))


def test_fuse_gelu_swaps_gpt2_activations_and_keeps_outputs():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=16,
                                       bos_token_id=0, eos_token_id=0)).eval()
    ids = torch.randint(0, 64, (2, 10))
    before = model(ids).logits
    fuse_gelu(model)
    assert sum(isinstance(m, GELUTanhSigmoid) for m in model.modules()) == 2
    assert model.config.activation_function == "gelu_new"  # the saved config is untouched
    torch.testing.assert_close(model(ids).logits, before, rtol=1e-5, atol=1e-5)

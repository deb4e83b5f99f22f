import torch

from pflbench.methods.base import Update, fedavg


def test_fedavg_weights_deltas_by_sample_count():
    shared = {"w": torch.tensor([1.0, 1.0]), "b": torch.tensor([0.0])}
    updates = [
        Update(client=0, num_samples=1, delta={"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}),
        Update(client=1, num_samples=3, delta={"w": torch.tensor([-1.0, 4.0]), "b": torch.tensor([0.0])}),
    ]
    out = fedavg(shared, updates)
    # w: 1 + (1*3 + 3*-1)/4 = 1 ; 1 + (1*0 + 3*4)/4 = 4 ; b: 0 + (4 + 0)/4 = 1
    assert torch.allclose(out["w"], torch.tensor([1.0, 4.0]))
    assert torch.allclose(out["b"], torch.tensor([1.0]))


def test_fedavg_without_updates_keeps_the_global_state():
    shared = {"w": torch.tensor([2.0])}
    assert fedavg(shared, []) is shared

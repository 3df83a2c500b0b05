"""The device list the worker sends in its Hello, with torch.cuda's answers faked."""

from types import SimpleNamespace

from xgblora_engine.devices import gpu_count, list_devices
from xgblora_engine.payloads import Device

GB = 2**30


class FakeCuda:
    """Answers like torch.cuda on a machine with these GPUs: (name, total, used, capability)."""

    def __init__(self, gpus, nvml=True):
        self.gpus, self.nvml = gpus, nvml
        self.contexts = set()  # GPUs asked through CUDA (a context each on real hardware)

    def is_available(self):
        return bool(self.gpus)

    def device_count(self):
        return len(self.gpus)

    def get_device_properties(self, i):
        name, total, _, _ = self.gpus[i]
        return SimpleNamespace(name=name, total_memory=total)

    def get_device_capability(self, i):
        return self.gpus[i][3]

    def device_memory_used(self, i):
        if not self.nvml:
            raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")
        return self.gpus[i][2]

    def mem_get_info(self, i):
        self.contexts.add(i)
        _, total, used, _ = self.gpus[i]
        return total - used, total


def test_no_cuda_lists_the_cpu_alone():
    devices = list_devices(FakeCuda([]))
    assert [d.device for d in devices] == ["cpu"]
    cpu = devices[0]
    assert cpu.total_bytes >= cpu.free_bytes > 0 and cpu.bf16 is False
    assert cpu.compute_capability is None and cpu.name
    assert gpu_count(devices) == 0


def test_each_gpu_with_its_memory_bf16_and_capability():
    cuda = FakeCuda([("NVIDIA GeForce RTX 4090", 24 * GB, 3 * GB, (8, 9)),
                     ("Tesla V100-SXM2-16GB", 16 * GB, 1 * GB, (7, 0))])
    devices = list_devices(cuda)
    assert [d.device for d in devices] == ["cpu", "cuda:0", "cuda:1"] and gpu_count(devices) == 2
    rtx, v100 = devices[1:]
    assert rtx == Device(device="cuda:0", name="NVIDIA GeForce RTX 4090", total_bytes=24 * GB,
                         free_bytes=21 * GB, bf16=True, compute_capability="8.9")
    assert v100.bf16 is False and v100.compute_capability == "7.0" and v100.free_bytes == 15 * GB
    assert cuda.contexts == set()  # NVML answered: no CUDA context made on either GPU


def test_without_nvml_free_memory_comes_from_cuda():
    cuda = FakeCuda([("NVIDIA A100-SXM4-80GB", 80 * GB, 10 * GB, (8, 0))], nvml=False)
    assert list_devices(cuda)[1].free_bytes == 70 * GB and cuda.contexts == {0}

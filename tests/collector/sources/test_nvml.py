"""NVML source against a fake pynvml: fields, counter vs integrated energy, lost GPUs, resets, MIG, limits."""

from __future__ import annotations

import ctypes.util
import logging

import pynvml
import pytest

from collector.errors import DeviceLost, SourceUnavailable
from collector.schema import Point
from collector.sources import nvml as nvml_mod
from collector.sources.nvml import NvmlSource, get_power_limits, set_power_limit_w
from tests.collector.sources import fake_pynvml
from tests.collector.sources.fake_pynvml import FakeGpu, FakeMig, FakeNvml
from tests.collector.sources.trees import tick


def gpu_points(points: list[Point]) -> dict[str, Point]:
    return {p.tag("gpu") or "": p for p in points if p.measurement == "gpu"}


def quality_points(points: list[Point]) -> dict[str, Point]:
    return {p.tag("device") or "": p for p in points if p.measurement == "quality"}


def two_gpus() -> FakeNvml:
    return FakeNvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])


# --- the fake is the real binding's shape -------------------------------------------


def test_fake_matches_real_binding() -> None:
    for name, value in fake_pynvml.CONSTANTS.items():
        assert getattr(pynvml, name) == value, name
    for name in dir(FakeNvml):
        if name.startswith("nvml"):
            assert callable(getattr(pynvml, name)), name
    assert issubclass(pynvml.NVMLError_GpuIsLost, pynvml.NVMLError)
    assert pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST).value == fake_pynvml.NVML_ERROR_GPU_IS_LOST


def test_source_defaults_match_real_constants() -> None:
    assert nvml_mod._GPU_IS_LOST == pynvml.NVML_ERROR_GPU_IS_LOST
    assert nvml_mod._NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml_mod._REASON_SW_POWER_CAP == pynvml.nvmlClocksEventReasonSwPowerCap
    assert nvml_mod._REASON_HW_POWER_BRAKE == pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown
    assert nvml_mod._REASON_SW_THERMAL == pynvml.nvmlClocksEventReasonSwThermalSlowdown
    assert nvml_mod._REASON_HW_THERMAL == pynvml.nvmlClocksEventReasonHwThermalSlowdown
    assert nvml_mod._REASON_HW_SLOWDOWN == pynvml.nvmlClocksEventReasonHwSlowdown


# --- probe -----------------------------------------------------------------------------


def test_probe_describes_the_gpus() -> None:
    source = NvmlSource("h", nvml=two_gpus())
    probe = source.probe()
    assert probe.ok
    assert probe.detail == ("found 2 GPUs (2x NVIDIA H100 80GB HBM3), driver 550.54.15, "
                            "energy counter on 2/2")
    assert source.gpus() == [(0, "GPU-a", "NVIDIA H100 80GB HBM3", "counter"),
                             (1, "GPU-b", "NVIDIA H100 80GB HBM3", "counter")]
    assert source.nvml_module is not None


@pytest.mark.parametrize(("code", "words"), [
    (fake_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"),
    (fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver not loaded"),
    (fake_pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
    (fake_pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "versions differ"),
])
def test_probe_without_driver_gives_a_one_line_reason(code: int, words: str) -> None:
    probe = NvmlSource("h", nvml=FakeNvml(init_error=code)).probe()
    assert not probe.ok
    assert words in probe.detail and "\n" not in probe.detail


def test_probe_with_no_gpus() -> None:
    probe = NvmlSource("h", nvml=FakeNvml([])).probe()
    assert not probe.ok and probe.detail == "NVML found no NVIDIA GPUs"


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None,
                    reason="this machine has an NVIDIA driver")
def test_real_pynvml_without_a_driver_is_skipped_with_a_reason() -> None:
    probe = NvmlSource("h").probe()
    assert not probe.ok
    assert "libnvidia-ml.so.1 not found" in probe.detail


def test_sample_without_nvml_raises_source_unavailable() -> None:
    source = NvmlSource("h", nvml=FakeNvml(init_error=fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(SourceUnavailable, match="driver not loaded"):
        source.sample(tick(0))


# --- sampling ----------------------------------------------------------------------------


def test_fields_units_and_counter_energy() -> None:
    fake = two_gpus()
    source = NvmlSource("node-1", nvml=fake)
    first = gpu_points(source.sample(tick(0.0)))
    assert "energy_j" not in first["0"].field_map  # a counter needs two readings
    fake.gpus[0].consume_mj(300_000)
    p = gpu_points(source.sample(tick(1.0)))["0"]
    assert p.tag_map == {"host": "node-1", "gpu": "0", "uuid": "GPU-a",
                         "model": "NVIDIA H100 80GB HBM3", "method": "counter"}
    assert p.field_map == {
        "power_w": 300.0, "power_instant_w": 310.0, "power_average_w": 295.0,
        "energy_j": 300.0, "util_pct": 90.0, "mem_util_pct": 40.0,
        "sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0, "temp_c": 55.0,
        "power_limit_w": 700.0, "clocks_event_reasons": 0.0,
        "throttle_power": 0.0, "throttle_thermal": 0.0,
    }


def test_unsupported_fields_are_left_out_never_zero() -> None:
    gpu = FakeGpu(instant_mw=None, average_mw=None, util=None, sm_clock_mhz=None,
                  enforced_limit_mw=None, reasons=None, mig_enabled=None)
    fake = FakeNvml([gpu])
    source = NvmlSource("h", nvml=fake)
    source.sample(tick(0))
    p = gpu_points(source.sample(tick(1)))["0"]
    for missing in ("power_instant_w", "power_average_w", "util_pct", "mem_util_pct",
                    "sm_clock_mhz", "power_limit_w", "clocks_event_reasons", "mig_instances"):
        assert missing not in p.field_map, missing
    assert p.field("mem_clock_mhz") == 2619.0
    # Unsupported calls are remembered, not repeated every sample.
    calls = fake.calls["nvmlDeviceGetFieldValues"]
    source.sample(tick(2))
    assert fake.calls["nvmlDeviceGetFieldValues"] == calls


def test_old_driver_temperature_falls_back_to_the_deprecated_call() -> None:
    fake = FakeNvml([FakeGpu(temp_v_supported=False, temp_c=61)])
    p = gpu_points(NvmlSource("h", nvml=fake).sample(tick(0)))["0"]
    assert p.field("temp_c") == 61.0
    assert fake.calls["nvmlDeviceGetTemperature"] == 1


def test_without_energy_counter_power_is_integrated() -> None:
    fake = FakeNvml([FakeGpu(energy_mj=None, power_mw=200_000)])
    source = NvmlSource("h", nvml=fake)
    assert source.probe().detail.endswith("energy counter on 0/1")
    source.sample(tick(0.0))
    fake.gpus[0].power_mw = 400_000
    p = gpu_points(source.sample(tick(2.0)))["0"]
    assert p.tag("method") == "integrated"
    assert p.field("energy_j") == pytest.approx(600.0)  # (200 + 400) / 2 x 2 s
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1  # asked once, at discovery


def test_throttle_reason_flags() -> None:
    reasons = (fake_pynvml.nvmlClocksEventReasonSwPowerCap
               | fake_pynvml.nvmlClocksEventReasonGpuIdle)
    p = gpu_points(NvmlSource("h", nvml=FakeNvml([FakeGpu(reasons=reasons)])).sample(tick(0)))["0"]
    assert p.field("clocks_event_reasons") == float(reasons)
    assert p.field("throttle_power") == 1.0 and p.field("throttle_thermal") == 0.0


def test_counter_reset_after_driver_reload_gives_no_negative_energy() -> None:
    fake = FakeNvml([FakeGpu(energy_mj=50_000_000)])
    source = NvmlSource("h", nvml=fake, quality_interval_s=10.0)
    source.sample(tick(0))
    fake.gpus[0].energy_mj = 1_000  # driver reloaded: counter restarts
    p = gpu_points(source.sample(tick(1)))["0"]
    assert "energy_j" not in p.field_map
    fake.gpus[0].energy_mj = 301_000
    assert gpu_points(source.sample(tick(2)))["0"].field("energy_j") == 300.0
    q = quality_points(source.sample(tick(10)))["0"]
    assert q.field("counter_resets") == 1.0


# --- lost GPUs --------------------------------------------------------------------------


def test_lost_gpu_is_skipped_others_keep_sampling_and_it_is_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = two_gpus()
    source = NvmlSource("h", nvml=fake, retry_lost_s=30.0, quality_interval_s=60.0)
    source.sample(tick(0))
    fake.gpus[1].lost = True
    with caplog.at_level(logging.WARNING):
        points = gpu_points(source.sample(tick(1)))
    assert set(points) == {"0"}
    assert "gpu 1 is lost" in caplog.text
    assert source.compute_pids()[1] == []
    fake.gpus[1].lost = False
    fake.gpus[1].consume_mj(10_000_000)  # energy during the gap is not attributed
    assert set(gpu_points(source.sample(tick(10)))) == {"0"}  # not retried before 30 s
    back = gpu_points(source.sample(tick(31)))
    assert set(back) == {"0", "1"}
    assert "energy_j" not in back["1"].field_map
    fake.gpus[1].consume_mj(5_000)
    assert gpu_points(source.sample(tick(32)))["1"].field("energy_j") == 5.0
    q = quality_points(source.sample(tick(60)))
    assert q["1"].field("device_lost") == 1.0 and q["1"].field("device_available") == 1.0
    assert q["0"].field("device_lost") == 0.0


def test_gpu_lost_at_start_is_reported_and_retried() -> None:
    fake = two_gpus()
    fake.gpus[0].lost = True
    source = NvmlSource("h", nvml=fake, retry_lost_s=5.0)
    assert source.probe().detail.endswith("1 unavailable")
    assert set(gpu_points(source.sample(tick(0)))) == {"1"}
    fake.gpus[0].lost = False
    p = gpu_points(source.sample(tick(6)))["0"]
    assert p.tag("uuid") == "GPU-a" and p.tag("method") == "counter"


# --- energy cross-check -----------------------------------------------------------------


def test_quality_cross_checks_counter_against_integrated_power() -> None:
    fake = FakeNvml([FakeGpu(power_mw=250_000)])
    source = NvmlSource("h", nvml=fake, quality_interval_s=60.0)
    for t in range(0, 61):
        if t:
            fake.gpus[0].consume_mj(260_000)  # the counter says 260 W; power says 250 W
        points = source.sample(tick(float(t)))
    q = quality_points(points)["0"]
    assert q.tag_map == {"host": "h", "source": "nvml", "device": "0"}
    assert q.field("check_counter_j") == pytest.approx(60 * 260.0)
    assert q.field("check_integrated_j") == pytest.approx(60 * 250.0)
    assert q.field("energy_check_rel_diff") == pytest.approx(250 / 260 - 1)
    assert q.field("window_s") == 60.0
    assert q.field("counter_wraps") == 0.0


# --- MIG and processes --------------------------------------------------------------------


def test_mig_instances_counted_and_their_pids_merged_into_the_gpu() -> None:
    mig_gpu = FakeGpu(mig_enabled=True, pids=[100], migs={0: FakeMig([200, 201]), 3: FakeMig([100])})
    fake = FakeNvml([mig_gpu, FakeGpu(pids=[300])])
    source = NvmlSource("h", nvml=fake)
    assert source.probe().detail.endswith("MIG on 1/2")
    points = gpu_points(source.sample(tick(0)))
    assert points["0"].field("mig_instances") == 2.0
    assert "mig_instances" not in points["1"].field_map
    assert source.compute_pids() == {0: [100, 200, 201], 1: [300]}


def test_pids_are_not_tags_or_fields() -> None:
    source = NvmlSource("h", nvml=FakeNvml([FakeGpu(pids=[4242])]))
    for p in source.sample(tick(0)):
        assert "4242" not in str(p.tags) and 4242.0 not in p.field_map.values()


def test_close_shuts_nvml_down() -> None:
    fake = FakeNvml()
    source = NvmlSource("h", nvml=fake)
    source.probe()
    source.close()
    assert fake.initialized == 0
    source.close()  # twice is harmless


# --- power limits -----------------------------------------------------------------------------


def test_get_power_limits_in_watts() -> None:
    fake = FakeNvml([FakeGpu(limit_constraints_mw=(100_000, 700_000), limit_mw=650_000,
                             default_limit_mw=700_000)])
    assert get_power_limits(0, nvml=fake) == (100.0, 700.0, 650.0, 700.0)
    assert fake.initialized == 0


def test_set_power_limit_validates_against_the_range() -> None:
    fake = FakeNvml([FakeGpu(limit_constraints_mw=(100_000, 700_000))])
    with pytest.raises(ValueError, match=r"power limit 900 W for gpu 0 .* range 100-700 W"):
        set_power_limit_w(0, 900, nvml=fake)
    with pytest.raises(ValueError, match="finite number"):
        set_power_limit_w(0, float("nan"), nvml=fake)
    assert fake.set_limits == []


def test_set_power_limit_sets_milliwatts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml([FakeGpu()])
    with caplog.at_level(logging.WARNING, logger="wattlens.sources.nvml"):
        set_power_limit_w(0, 450.5, nvml=fake)
    assert fake.set_limits == [(0, 450_500)]
    assert "power limit changed from 700 W to 450.5 W" in caplog.text
    assert fake.initialized == 0


def test_set_power_limit_without_root_says_so() -> None:
    fake = FakeNvml([FakeGpu(set_limit_error=fake_pynvml.NVML_ERROR_NO_PERMISSION)])
    with pytest.raises(PermissionError, match="needs root"):
        set_power_limit_w(0, 500, nvml=fake)


def test_power_limits_of_a_missing_or_lost_gpu() -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(lost=True)])
    with pytest.raises(ValueError, match="gpu index 5: no such GPU"):
        get_power_limits(5, nvml=fake)
    with pytest.raises(DeviceLost):
        get_power_limits(1, nvml=fake)

"""tools/flash.py and `make flash`: writing MicroPython onto a board.

- Pico W: end to end against a fake bootloader drive (a folder holding INFO_UF2.TXT, passed as
  --device): a UF2 made here block by block is copied whole; a .bin, a corrupt UF2 or one for the
  RP2350 is refused with exit 2 and the drive left untouched; no drive gives exit 1 and the
  BOOTSEL steps.
- ESP32: --dry-run prints the exact esptool command lines (erase, then write at 0x1000); a file
  that does not start with 0xE9, or a UF2, is refused with exit 2; the esptool installed in this
  venv runs and accepts the command spelling the tool uses.
- `make flash` without FIRMWARE (or without an ESP32/Pico W BOARD) stops with exit 2 before
  touching the venv.
"""

import argparse
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import flash  # noqa: E402  (tools/ on sys.path)

INFO_TEXT = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"


def make_uf2(payload, family=flash.RP2040_FAMILY, base=0x10000000, flags=flash.UF2_FAMILY_FLAG):
    """payload split into 256-byte UF2 blocks, as picotool and MicroPython's build write them."""
    chunks = [payload[i : i + 256] for i in range(0, len(payload), 256)] or [b""]
    out = bytearray()
    for n, chunk in enumerate(chunks):
        head = struct.pack(
            "<8I", flash.UF2_MAGIC0, flash.UF2_MAGIC1, flags, base + 256 * n, 256, n, len(chunks), family
        )
        data = chunk.ljust(476, b"\0")
        out += head + data + struct.pack("<I", flash.UF2_MAGIC_END)
    return bytes(out)


def esp_image(size=0x9000, chip_id=0):
    """An ESP32 image as the MicroPython download starts: 0xE9 header, chip id, partition table."""
    img = bytearray(size)
    img[0] = 0xE9
    img[1] = 3
    struct.pack_into("<H", img, 12, chip_id)
    img[0x7000:0x7002] = b"\xaa\x50"  # partition table at 0x8000 in flash, the image at 0x1000
    return bytes(img)


@pytest.fixture
def drive(tmp_path):
    d = tmp_path / "RPI-RP2"
    d.mkdir()
    (d / "INFO_UF2.TXT").write_text(INFO_TEXT)
    (d / "INDEX.HTM").write_text("<html></html>")
    return d


def run(argv, capsys):
    rc = flash.main(argv)
    out, err = capsys.readouterr()
    return rc, out + err


# -- Pico W -------------------------------------------------------------------------------------------


def test_uf2_is_copied_to_the_drive(tmp_path, drive, capsys):
    payload = b"MicroPython for the Raspberry Pi Pico W with RP2040 " * 100
    fw = tmp_path / "RPI_PICO_W-20250101-v1.28.0.uf2"
    fw.write_bytes(make_uf2(payload))
    rc, out = run(["rp2040", str(fw), "--device", str(drive)], capsys)
    assert rc == 0, out
    copied = drive / fw.name
    assert copied.read_bytes() == fw.read_bytes()
    assert "21 UF2 blocks" in out and "reboots into MicroPython" in out
    assert "warning" not in out


def test_uf2_dry_run_copies_nothing(tmp_path, drive, capsys):
    fw = tmp_path / "fw.uf2"
    fw.write_bytes(make_uf2(b"Pico W" * 50))
    rc, out = run(["rp2040", str(fw), "--device", str(drive), "--dry-run"], capsys)
    assert rc == 0 and "would copy: %s -> %s" % (fw, drive / "fw.uf2") in out
    assert sorted(os.listdir(drive)) == ["INDEX.HTM", "INFO_UF2.TXT"]


def _corrupt(data):
    bad = bytearray(data)
    bad[512 + 508] ^= 0xFF  # the second block's final magic
    return bytes(bad)


def _renumbered(data):
    bad = bytearray(data)
    struct.pack_into("<I", bad, 512 + 20, 5)  # the second block claims to be block 5
    return bytes(bad)


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("firmware.bin", lambda: esp_image(), "takes the .uf2"),
        ("fw.uf2", lambda: b"not a uf2 file at all" * 40, "not a UF2 file"),
        ("fw.uf2", lambda: _corrupt(make_uf2(b"Pico W" * 100)), "bad UF2 magic"),
        ("fw.uf2", lambda: _renumbered(make_uf2(b"Pico W" * 100)), "out of sequence"),
        ("fw.uf2", lambda: make_uf2(b"Pico W" * 100)[:-512], "truncated"),
        ("fw.uf2", lambda: make_uf2(b"Pico W" * 100)[:-100], "whole number of 512-byte"),
        ("fw.uf2", lambda: make_uf2(b"Pico 2 W" * 100, family=0xE48BFF59), "RP2350"),
    ],
)
def test_wrong_file_for_the_pico_w_is_refused(tmp_path, drive, capsys, name, make, message):
    fw = tmp_path / name
    fw.write_bytes(make())
    rc, out = run(["rp2040", str(fw), "--device", str(drive)], capsys)
    assert rc == 2, out
    assert message in out
    assert sorted(os.listdir(drive)) == ["INDEX.HTM", "INFO_UF2.TXT"]  # nothing copied


def test_plain_pico_firmware_gets_a_warning(tmp_path, drive, capsys):
    fw = tmp_path / "RPI_PICO.uf2"
    fw.write_bytes(make_uf2(b"Raspberry Pi Pico with RP2040" * 20))
    rc, out = run(["rp2040", str(fw), "--device", str(drive)], capsys)
    assert rc == 0 and "warning" in out and "no Wi-Fi" in out


def test_no_drive_gives_the_bootsel_steps(tmp_path, capsys, monkeypatch):
    fw = tmp_path / "fw.uf2"
    fw.write_bytes(make_uf2(b"Pico W" * 10))
    empty = tmp_path / "not-mounted"
    rc, out = run(["rp2040", str(fw), "--device", str(empty)], capsys)
    assert rc == 1 and "hold the BOOTSEL button" in out and "plug the USB cable in" in out
    # and without --device: nothing in the usual places either
    monkeypatch.setattr(flash, "candidate_drives", lambda: [str(empty)])
    rc, out = run(["rp2040", str(fw)], capsys)
    assert rc == 1 and "no RPI-RP2 drive found" in out and "BOOTSEL" in out


def test_folder_without_info_file_is_not_a_drive(tmp_path, capsys):
    fw = tmp_path / "fw.uf2"
    fw.write_bytes(make_uf2(b"Pico W" * 10))
    rc, out = run(["rp2040", str(fw), "--device", str(tmp_path)], capsys)
    assert rc == 1 and "no INFO_UF2.TXT there" in out


def test_serial_device_for_the_pico_is_a_usage_error(tmp_path, capsys):
    fw = tmp_path / "fw.uf2"
    fw.write_bytes(make_uf2(b"Pico W" * 10))
    rc, out = run(["rp2040", str(fw), "--device", "/dev/ttyACM0"], capsys)
    assert rc == 2 and "serial device" in out


def test_drive_search_finds_a_mount_under_media(tmp_path, monkeypatch):
    monkeypatch.setenv("USER", "pat")
    assert flash.candidate_drives()[:2] == ["/media/pat/RPI-RP2", "/run/media/pat/RPI-RP2"]
    d = tmp_path / "RPI-RP2"
    d.mkdir()
    (d / "INFO_UF2.TXT").write_text(INFO_TEXT)
    monkeypatch.setattr(flash, "candidate_drives", lambda: ["/nonexistent/RPI-RP2", str(d)])
    assert flash.find_drive(None) == str(d)


# -- ESP32 ------------------------------------------------------------------------------------------


def test_esp32_dry_run_prints_the_esptool_commands(tmp_path, capsys):
    fw = tmp_path / "ESP32_GENERIC-20250101-v1.28.0.bin"
    fw.write_bytes(esp_image())
    rc, out = run(["esp32", str(fw), "--device", "/dev/ttyUSB0", "--dry-run"], capsys)
    assert rc == 0, out
    py = sys.executable
    assert "would run: %s -m esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 erase-flash" % py in out
    assert (
        "would run: %s -m esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash -z 0x1000 %s"
        % (
            py,
            fw,
        )
        in out
    )
    assert out.index("erase-flash") < out.index("write-flash")
    assert "warning" not in out


def test_esp32_options_offset_chip_port(tmp_path, capsys):
    fw = tmp_path / "s3.bin"
    fw.write_bytes(esp_image(chip_id=9, size=0x9000))
    rc, out = run(["esp32", str(fw), "--chip", "esp32s3", "--dry-run", "--no-erase", "--baud", "115200"], capsys)
    assert rc == 0, out
    assert "erase-flash" not in out and "--port" not in out  # esptool finds the port itself
    assert "--chip esp32s3 --baud 115200 write-flash -z 0x0 " in out
    rc, out = run(["esp32", str(fw), "--chip", "esp32s3", "--offset", "0x2000", "--dry-run"], capsys)
    assert rc == 0 and "write-flash -z 0x2000 " in out


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("fw.bin", b"\x00" * 4096, "first byte 0x00, an image starts with 0xE9"),
        ("fw.bin", b"", "first byte empty"),
        ("RPI_PICO_W.uf2", make_uf2(b"Pico W" * 10), "an ESP32 takes the .bin"),
        ("renamed.bin", make_uf2(b"Pico W" * 10), "is a UF2 file"),
        ("fw.bin", esp_image(chip_id=9), "an image for esp32s3, not esp32"),
    ],
)
def test_esp32_wrong_file_is_refused(tmp_path, capsys, name, data, message):
    fw = tmp_path / name
    fw.write_bytes(data)
    rc, out = run(["esp32", str(fw), "--dry-run"], capsys)
    assert rc == 2, out
    assert message in out


def test_esp32_application_image_only_gets_a_warning(tmp_path, capsys):
    fw = tmp_path / "micropython.bin"
    img = bytearray(esp_image())
    img[0x7000:0x7002] = b"\0\0"
    fw.write_bytes(bytes(img))
    rc, out = run(["esp32", str(fw), "--dry-run"], capsys)
    assert rc == 0 and "warning" in out and "no partition table" in out


def test_missing_file_and_bad_arguments(tmp_path, capsys):
    rc, out = run(["esp32", str(tmp_path / "none.bin")], capsys)
    assert rc == 2 and "cannot read" in out and "ESP32_GENERIC" in out
    rc, out = run(["esp8266", "x.bin"], capsys)
    assert rc == 2
    rc, out = run(["esp32", "x.bin", "--offset", "nope"], capsys)
    assert rc == 2


def test_installed_esptool_accepts_the_spelling_used(tmp_path):
    """The pinned esptool is in this venv and knows the commands and options flash.py passes."""
    version = flash.esptool_version()
    if version is None:
        pytest.fail("esptool is not installed in the venv: run `make venv` (requirements.txt pins it)")
    p = subprocess.run([sys.executable, "-m", "esptool", "version"], stdout=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0 and ".".join(str(v) for v in version) in p.stdout
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp_image())
    args = argparse.Namespace(
        chip="esp32", device="/dev/ttyUSB0", baud=460800, offset=0x1000, firmware=str(fw), no_erase=False
    )
    erase, write = flash.esptool_commands(args, version)
    for cmd, option in ((erase, None), (write, "--compress")):
        # the global options, then the command's --help: esptool parses both and exits 0
        head = cmd[: cmd.index("--baud") + 3]
        p = subprocess.run(head + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        assert p.returncode == 0, p.stdout
        if option:
            assert option in p.stdout and "-z" in p.stdout  # -z is --compress


# -- make flash ------------------------------------------------------------------------------------


def _make(*args):
    return subprocess.run(
        ["make", "-s", "-C", ROOT, "flash"] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def test_make_flash_needs_firmware():
    p = _make("BOARD=esp32")
    assert p.returncode == 2 and "FIRMWARE=... is required" in p.stdout
    p = _make("FIRMWARE=fw.bin", "BOARD=unix")
    assert p.returncode == 2 and "BOARD=esp32 or BOARD=rp2040" in p.stdout


def test_make_flash_dry_run_reaches_the_tool(tmp_path):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp_image())
    p = _make("BOARD=esp32", "FIRMWARE=%s" % fw, "DEVICE=/dev/ttyUSB9", "OFFSET=0x1000", "ARGS=--dry-run")
    assert p.returncode == 0, p.stdout
    assert "--port /dev/ttyUSB9 --baud 460800 write-flash -z 0x1000 %s" % fw in p.stdout

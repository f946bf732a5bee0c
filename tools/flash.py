"""Write MicroPython itself onto a board (CPython tool): esptool for an ESP32, the UF2 copy for a Pico W.

    python tools/flash.py esp32 FIRMWARE.bin [--device /dev/ttyUSB0] [--chip esp32] [--offset 0x1000]
                                             [--baud 460800] [--no-erase] [--dry-run]
    python tools/flash.py rp2040 FIRMWARE.uf2 [--device /media/$USER/RPI-RP2] [--dry-run]

ESP32: the image is checked (it starts with 0xE9, the ESP image magic, and its header names the
chip), then `python -m esptool --chip CHIP [--port DEVICE] --baud BAUD erase-flash` and
`... write-flash -z OFFSET FIRMWARE` run from this Python's environment (esptool is pinned in
requirements.txt). Without --device esptool finds the serial port itself. The offset is where the
MicroPython download goes: 0x1000 on an ESP32, 0x0 on an ESP32-S3 or -C3.

Pico W: hold BOOTSEL while plugging the board in; it mounts as a drive named RPI-RP2 holding
INFO_UF2.TXT. The file is checked block by block (UF2 magic numbers, block numbering, the RP2040
family id), copied onto that drive and synced; the board then reboots into MicroPython.

Exit status: 0 flashed (or --dry-run printed what it would do), 1 the flash failed or no board was
found (the message says what to do), 2 bad arguments or the wrong file for the board.
This file owns writing the firmware only: deploying the gateway is deploy.py's.
"""

import argparse
import getpass
import os
import shutil
import struct
import subprocess
import sys

DOWNLOAD = {
    "esp32": "micropython.org/download/ESP32_GENERIC/ (the .bin, e.g. ESP32_GENERIC-<date>-v<version>.bin)",
    "rp2040": "micropython.org/download/RPI_PICO_W/ (the .uf2, e.g. RPI_PICO_W-<date>-v<version>.uf2)",
}

# ESP32 family: default offset of the MicroPython image and the chip id in the image header.
CHIPS = {"esp32": (0x1000, 0), "esp32s2": (0x1000, 2), "esp32c3": (0x0, 5), "esp32s3": (0x0, 9)}
CHIP_NAMES = {0: "esp32", 2: "esp32s2", 5: "esp32c3", 9: "esp32s3", 12: "esp32c2", 13: "esp32c6", 16: "esp32h2"}
ESP_MAGIC = 0xE9
PARTITION_TABLE = 0x8000  # where the MicroPython image's partition table lands in flash
PARTITION_MAGIC = b"\xaa\x50"

# UF2 (github.com/microsoft/uf2): 512-byte blocks, 32-byte header, 476 bytes of data, final magic.
UF2_MAGIC0 = 0x0A324655  # "UF2\n"
UF2_MAGIC1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FAMILY_FLAG = 0x00002000
UF2_NOT_MAIN_FLASH = 0x00000001
RP2040_FAMILY = 0xE48BFF56
FAMILIES = {
    RP2040_FAMILY: "RP2040",
    0xE48BFF59: "RP2350 (ARM)",
    0xE48BFF5A: "RP2350 (RISC-V)",
    0xE48BFF57: "RP2 absolute",
}
DRIVE = "RPI-RP2"
INFO = "INFO_UF2.TXT"

BOOTSEL_STEPS = """no {drive} drive found{where}. To put the Pico W in its bootloader:
  1. unplug the board;
  2. hold the BOOTSEL button (the white button on the board) and plug the USB cable in;
  3. let go: a drive named {drive} appears (open it in the file manager if your system does not
     mount it by itself), then run this again (or pass its folder: DEVICE=/path/to/{drive}).
If MicroPython already runs on the board, `mpremote connect /dev/ttyACM0 bootloader` does the same."""


class FlashError(Exception):
    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


# -- checking the file -----------------------------------------------------------------------------


def is_uf2(data):
    return len(data) >= 8 and struct.unpack_from("<II", data, 0) == (UF2_MAGIC0, UF2_MAGIC1)


def check_uf2(data, name):
    """Every block's magic numbers, numbering and family. Returns (blocks, payload bytes) or raises
    FlashError(status 2) naming the first fault."""
    if not is_uf2(data):
        raise FlashError(
            "%s is not a UF2 file (no UF2 magic at its start): the Pico W takes the .uf2 from %s"
            % (name, DOWNLOAD["rp2040"]),
            2,
        )
    if len(data) % 512:
        raise FlashError(
            "%s: %d bytes is not a whole number of 512-byte UF2 blocks (a truncated download?)" % (name, len(data)), 2
        )
    count = len(data) // 512
    payload = 0
    total = None
    for i in range(count):
        m0, m1, flags, _addr, size, number, blocks, family = struct.unpack_from("<8I", data, 512 * i)
        (end,) = struct.unpack_from("<I", data, 512 * i + 508)
        if (m0, m1, end) != (UF2_MAGIC0, UF2_MAGIC1, UF2_MAGIC_END):
            raise FlashError("%s: block %d has bad UF2 magic numbers (a corrupt file)" % (name, i), 2)
        if size > 476 or number != i or (total is not None and blocks != total) or number >= blocks:
            raise FlashError(
                "%s: block %d is out of sequence (number %d of %d, %d data bytes): a corrupt file"
                % (name, i, number, blocks, size),
                2,
            )
        total = blocks
        if flags & UF2_FAMILY_FLAG and family != RP2040_FAMILY:
            what = FAMILIES.get(family, "family 0x%08x" % family)
            raise FlashError(
                "%s is firmware for %s, not for the Pico W's RP2040: download %s" % (name, what, DOWNLOAD["rp2040"]), 2
            )
        if not flags & UF2_NOT_MAIN_FLASH:
            payload += size
    if total != count:
        raise FlashError("%s: %d blocks, the file says %d (a truncated download?)" % (name, count, total), 2)
    return count, payload


def check_esp_image(data, name, chip, offset):
    """The first byte is the ESP image magic and the header's chip id matches --chip. Returns a
    list of warnings (an image that does not look like a whole MicroPython download)."""
    if is_uf2(data) or name.lower().endswith(".uf2"):
        raise FlashError(
            "%s is a UF2 file (Raspberry Pi Pico firmware): an ESP32 takes the .bin from %s"
            % (name, DOWNLOAD["esp32"]),
            2,
        )
    if not data or data[0] != ESP_MAGIC:
        first = "empty" if not data else "0x%02x" % data[0]
        raise FlashError(
            "%s is not an ESP32 firmware image (first byte %s, an image starts with 0xE9): "
            "download the .bin from %s" % (name, first, DOWNLOAD["esp32"]),
            2,
        )
    warnings = []
    if len(data) >= 14:
        (chip_id,) = struct.unpack_from("<H", data, 12)  # esp_image_header_t.chip_id
        want = CHIPS[chip][1]
        if chip_id in CHIP_NAMES and chip_id != want:
            raise FlashError(
                "%s is an image for %s, not %s: download the firmware for your chip (or pass --chip %s)"
                % (name, CHIP_NAMES[chip_id], chip, CHIP_NAMES[chip_id]),
                2,
            )
    table = PARTITION_TABLE - offset
    if 0 < table and data[table : table + 2] != PARTITION_MAGIC:
        warnings.append(
            "%s has no partition table at 0x%x: it may be an application image only (a build's "
            "micropython.bin); the download from micropython.org is the whole image" % (name, PARTITION_TABLE)
        )
    return warnings


# -- ESP32: esptool ------------------------------------------------------------------------------------


def esptool_version():
    """The installed esptool's version as a tuple, or None when it is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover (Python < 3.8)
        return None
    try:
        text = version("esptool")
    except PackageNotFoundError:
        return None
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def esptool_commands(args, version):
    """The two esptool command lines: erase, then write. esptool 5 spells its commands with
    hyphens (erase-flash); older ones with underscores; with no esptool the pinned 5.x spelling."""
    dash = version is None or version[0] >= 5
    base = [sys.executable, "-m", "esptool", "--chip", args.chip]
    if args.device:
        base += ["--port", args.device]
    base += ["--baud", str(args.baud)]
    erase = base + ["erase-flash" if dash else "erase_flash"]
    write = base + ["write-flash" if dash else "write_flash", "-z", "0x%x" % args.offset, args.firmware]
    return ([] if args.no_erase else [erase]) + [write]


def flash_esp32(args, data):
    for w in check_esp_image(data, args.firmware, args.chip, args.offset):
        print("flash: warning: " + w)
    version = esptool_version()
    cmds = esptool_commands(args, version)
    print("image: %s, %d bytes, for %s at 0x%x" % (args.firmware, len(data), args.chip, args.offset))
    for cmd in cmds:
        print(("would run: " if args.dry_run else "run: ") + " ".join(_quote(c) for c in cmd))
    if args.dry_run:
        return 0
    if version is None:
        raise FlashError("esptool is not installed in %s: run `make venv` (requirements.txt pins it)" % sys.prefix, 2)
    for cmd in cmds:
        if subprocess.run(cmd).returncode != 0:
            raise FlashError(
                "esptool failed (%s). Check: the USB cable carries data (not a charge-only cable); the port "
                "(DEVICE=/dev/ttyUSB0, ls /dev/ttyUSB* /dev/ttyACM*); your user may open it (group dialout); "
                "nothing else holds it open (mpremote, a serial monitor); if it cannot connect, hold the BOOT "
                "button while it says 'Connecting...'; a lower --baud (115200) for a poor cable."
                % cmd[cmd.index("--baud") + 2]
            )
    print("flashed: press the board's EN/RST button (or replug it); MicroPython's REPL is on the serial port")
    return 0


def _quote(s):
    return "'%s'" % s if (" " in s or not s) else s


# -- Pico W: the UF2 drive -----------------------------------------------------------------------------


def candidate_drives():
    """Folders where an RPI-RP2 drive is usually mounted, then what findmnt/lsblk report."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or _user()
    out = []
    if user:
        out += ["/media/%s/%s" % (user, DRIVE), "/run/media/%s/%s" % (user, DRIVE)]
    out += ["/media/" + DRIVE, "/mnt/" + DRIVE, "/Volumes/" + DRIVE]
    for cmd in (["findmnt", "-rn", "-o", "TARGET,LABEL"], ["lsblk", "-rn", "-o", "MOUNTPOINT,LABEL"]):
        exe = shutil.which(cmd[0])
        if not exe:
            continue
        try:
            text = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in text.splitlines():
            fields = line.split(" ")
            if len(fields) >= 2 and fields[-1] == DRIVE and fields[0]:
                out.append(fields[0].replace("\\x20", " "))
    if os.name == "nt":  # drive letters
        out += ["%s:\\" % c for c in "DEFGHIJKLMNOPQRSTUVWXYZ"]
    seen = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def find_drive(device):
    """The mounted bootloader drive's folder (with INFO_UF2.TXT), or FlashError(1) with the steps."""
    if device:
        if device.startswith("/dev/") or device.upper().startswith("COM"):
            raise FlashError(
                "%s is a serial device: for the Pico W, DEVICE is the folder the %s drive is mounted "
                "on (leave it out to search the usual places)" % (device, DRIVE),
                2,
            )
        if os.path.isfile(os.path.join(device, INFO)):
            return device
        why = " at %s (%s)" % (device, "no " + INFO + " there" if os.path.isdir(device) else "no such folder")
        raise FlashError(BOOTSEL_STEPS.format(drive=DRIVE, where=why))
    for path in candidate_drives():
        if os.path.isfile(os.path.join(path, INFO)):
            return path
    raise FlashError(BOOTSEL_STEPS.format(drive=DRIVE, where=""))


def flash_rp2040(args, data):
    blocks, payload = check_uf2(data, args.firmware)
    if b"Pico W" not in data:
        print(
            "flash: warning: %s does not name the Pico W: the plain Pico build has no Wi-Fi (%s)"
            % (args.firmware, DOWNLOAD["rp2040"])
        )
    drive = find_drive(args.device)
    try:
        with open(os.path.join(drive, INFO), errors="replace") as f:
            info = f.read()
    except OSError:
        info = ""
    if "Board-ID:" in info and "RPI-RP2" not in info:
        board = info.split("Board-ID:")[1].split()[0] if info.split("Board-ID:")[1].split() else "?"
        raise FlashError("%s is the bootloader of another board (Board-ID: %s), not an RP2040's" % (drive, board), 2)
    dst = os.path.join(drive, os.path.basename(args.firmware))
    print("image: %s, %d UF2 blocks (%d bytes of flash), RP2040" % (args.firmware, blocks, payload))
    if args.dry_run:
        print("would copy: %s -> %s" % (args.firmware, dst))
        return 0
    print("copy: %s -> %s" % (args.firmware, dst))
    try:
        with open(dst, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if hasattr(os, "sync"):
            os.sync()
    except OSError as e:
        raise FlashError("copying to %s failed: %s (was the board unplugged?)" % (drive, e))
    print(
        "flashed: the board reboots into MicroPython; its REPL is on a serial port (/dev/ttyACM0; "
        "`mpremote connect list` shows it)"
    )
    return 0


# -- the command -----------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="exit status: 0 ok, 1 the flash failed or no board found, 2 bad arguments or the wrong file",
    )
    ap.add_argument("board", choices=("esp32", "rp2040"))
    ap.add_argument("firmware", help="the MicroPython download: .bin for esp32, .uf2 for rp2040")
    ap.add_argument("--device", help="esp32: serial port (default: esptool finds it); rp2040: the RPI-RP2 folder")
    ap.add_argument("--chip", choices=sorted(CHIPS), default="esp32", help="esp32 only (default esp32)")
    ap.add_argument(
        "--offset", type=lambda s: int(s, 0), help="esp32 only: flash address (0x1000 on esp32, 0x0 on s3/c3)"
    )
    ap.add_argument("--baud", type=int, default=460800, help="esp32 only (default 460800)")
    ap.add_argument("--no-erase", action="store_true", help="esp32 only: write without erasing the flash first")
    ap.add_argument("--dry-run", action="store_true", help="check the file and print what would run; change nothing")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    if args.offset is None:
        args.offset = CHIPS[args.chip][0]
    try:
        try:
            with open(args.firmware, "rb") as f:
                data = f.read()
        except OSError as e:
            raise FlashError(
                "cannot read %s: %s; download it from %s" % (args.firmware, e.strerror, DOWNLOAD[args.board]), 2
            )
        if args.board == "esp32":
            return flash_esp32(args, data)
        if not is_uf2(data) and args.firmware.lower().endswith(".bin"):
            raise FlashError(
                "%s is a .bin image (ESP32 firmware?): the Pico W takes the .uf2 from %s"
                % (args.firmware, DOWNLOAD["rp2040"]),
                2,
            )
        return flash_rp2040(args, data)
    except FlashError as e:
        print("flash: " + str(e), file=sys.stderr)
        return e.status


if __name__ == "__main__":
    sys.exit(main())

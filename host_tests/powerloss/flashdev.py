"""A board's flash chip for the MicroPython unix port: a block device backed by a host file.

Owns FlashDev, the block protocol `vfs.VfsLfs2` mounts (readblocks / writeblocks with offsets,
ioctl 4 count, 5 size, 6 erase), with NOR flash's rules as a board's SPI or QSPI flash has them:

- 4096-byte erase blocks; an erase sets every byte to 0xFF;
- a program can only clear bits: the stored byte becomes old & new (programming over data that
  was not erased is counted in `overprogrammed`: littlefs never does it, and a board would store
  the AND, which is what this device stores too);
- a program or an erase reaches the file in pieces of PIECE bytes, each its own write(2), so a
  process killed while the VM is inside writeblocks leaves the block half programmed, as a power
  cut in the middle of a page program does. Writes go straight to the file descriptor (the unix
  port's files have no user-space buffer): what was written before SIGKILL is in the file.

Runs on MicroPython only (host_tests/powerloss/flashrun.py uses it). Knows nothing of the gateway.
Allocates per call (slices, reads): a test fixture, not firmware.
"""

BLOCK = 4096
PIECE = 32  # bytes per write(2): a page program cut short anywhere at this granularity
_ERASED = b"\xff" * PIECE


class FlashDev:
    """A flash of `blocks` erase blocks in the file at path (made, all 0xFF, by create()).

    Reads are served from a copy of the chip in RAM (read once at start), so the time the VM
    spends in this device is mostly programs and erases: that is where a kill should land."""

    def __init__(self, path, blocks):
        self.f = open(path, "r+b")
        self.blocks = blocks
        self.mem = bytearray(blocks * BLOCK)
        self.mv = memoryview(self.mem)
        if self.f.readinto(self.mem) != len(self.mem):
            raise OSError(5)  # EIO: the image is shorter than the chip
        self.overprogrammed = 0  # programs over bytes that were not erased
        self.on_overprogram = None  # called with (block, offset) when that happens

    @staticmethod
    def create(path, blocks):
        with open(path, "wb") as f:
            piece = b"\xff" * BLOCK
            for _ in range(blocks):
                f.write(piece)

    def close(self):
        self.f.close()

    def readblocks(self, block, buf, offset=0):
        p = block * BLOCK + offset
        n = len(buf)
        if p + n > len(self.mem):
            raise OSError(5)  # EIO: past the end of the chip
        buf[:] = self.mv[p : p + n]

    def writeblocks(self, block, buf, offset=0):
        f = self.f
        mem = self.mem
        mv = self.mv
        src = memoryview(buf)
        base = block * BLOCK + offset
        n = len(buf)
        i = 0
        while i < n:
            k = min(PIECE, n - i)
            p = base + i
            piece = src[i : i + k]
            if mv[p : p + k] != _ERASED[:k]:
                self.overprogrammed += 1
                if self.on_overprogram is not None:
                    self.on_overprogram(block, offset + i)
                piece = bytes(a & b for a, b in zip(mem[p : p + k], piece))
            f.seek(p)
            f.write(piece)  # one write(2): a kill lands before or after it, never inside
            mv[p : p + k] = piece
            i += k

    def erase(self, block):
        f = self.f
        base = block * BLOCK
        for i in range(0, BLOCK, PIECE):
            f.seek(base + i)
            f.write(_ERASED)
            self.mv[base + i : base + i + PIECE] = _ERASED

    def ioctl(self, op, arg):
        if op == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self.blocks
        if op == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return BLOCK
        if op == 6:  # MP_BLOCKDEV_IOCTL_BLOCK_ERASE
            self.erase(arg)
            return 0
        return 0  # 1 init, 2 deinit, 3 sync: nothing to do

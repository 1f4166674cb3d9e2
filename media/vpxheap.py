"""Zero-filled heap memory for libvpx, so that its first pass is the same in every process.

**The fault.** With ExCamera's first-pass settings (``--tune=ssim``, ``--cpu-used=0``) libvpx's
VP8 encoder reads nine bytes it never wrote. Tuning for SSIM builds a per-macroblock activity map
before each frame by coding the first row and column of macroblocks as 16x16 intra blocks, with
coefficient optimization (cpu-used 0). That optimization starts from the "above" token contexts at
the macroblock descriptor's above-context pointer, which the activity pass never sets: it still
points where the previous frame's last macroblock left it, one entry (9 bytes) *past* the end of
the frame's above-context array (``mb_cols`` entries). Those bytes are the allocator's slack after
the array, whatever the heap last held there. Valgrind reports them ("Invalid read of size 8 ...
214 bytes inside a block of size 221" for CIF, 22 x 9 + alignment), and filling them with each of
the 256 byte values gives four different chunks for the foreman CIF chunk of frames 36..41.
vpxenc runs in a fresh process whose heap still holds zeros there, so it is repeatable; inside a
Python process the slack holds whatever Python, numpy or a previous encoder freed, which made
about one first pass in thirty (more on a loaded machine) differ from the rest.

**The fix.** libvpx gets its memory through ``malloc`` and ``calloc`` imported from the C library
(ELF jump slots). :func:`zero_libvpx_allocations` points those slots of every loaded libvpx at
functions that return ``calloc`` memory ``SLACK`` bytes longer than asked: every libvpx buffer,
and the bytes past it, start as zeros, as in vpxenc's fresh heap (the first passes stay equal to
vpxenc's, ``tests/test_chunks.py``). ``free`` is untouched: the memory is the C library's own.

This needs an ELF platform with ``/proc/self/maps`` (Linux) and x86-64 or AArch64; elsewhere the
function returns False and the first pass runs as before (``media.firstpass`` warns once).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import struct
import threading

#: Zero bytes added after every libvpx allocation (the known over-read is 9 bytes past an array).
SLACK = 64

_ELF_MAGIC = b"\x7fELF"
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_PLTRELSZ, _DT_STRTAB, _DT_SYMTAB, _DT_RELA, _DT_RELASZ, _DT_JMPREL = 0, 2, 5, 6, 7, 8, 23
#: Relocation types that fill a GOT slot with a symbol's address: (GLOB_DAT, JUMP_SLOT).
_GOT_RELOCATIONS = {62: (6, 7),           # EM_X86_64
                    183: (1025, 1026)}    # EM_AARCH64
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4

_lock = threading.Lock()
_patched: dict[str, list[tuple[int, int]]] = {}  # library path -> [(slot address, original value)]
_keep: list = []                                  # the ctypes callbacks, alive while installed


def zero_libvpx_allocations() -> bool:
    """Make every libvpx loaded in this process allocate zero-filled memory with ``SLACK`` zero
    bytes after each block (see the module docstring). Idempotent and thread-safe; libraries
    loaded later are patched by a later call. True when at least one libvpx is loaded and all of
    them are patched; False (nothing changed for the failing one) otherwise."""
    with _lock:
        libraries = _loaded_libvpx()
        if not libraries:
            return False
        ok = True
        for path, start, offset in libraries:
            if path in _patched:
                continue
            try:
                slots = _allocation_slots(path)
            except (OSError, ValueError):
                ok = False
                continue
            if not {"malloc", "calloc"} <= {name for name, _ in slots}:
                ok = False
                continue
            bias = start - offset  # load bias, from the mapping of file offset `offset`
            replacements = _replacements()
            done = []
            for name, r_offset in slots:
                address = bias + r_offset
                done.append((address, _write_slot(address, replacements[name])))
            _patched[path] = done
        return ok


def _replacements() -> dict[str, int]:
    libc = ctypes.CDLL(None)
    calloc = libc.calloc
    calloc.restype, calloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]
    limit = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1 - SLACK

    @ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)
    def zeroed_malloc(size):
        return calloc(1, size + SLACK) if size <= limit else None

    @ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
    def zeroed_calloc(count, size):
        total = count * size
        return calloc(1, total + SLACK) if total <= limit else None

    _keep.extend((zeroed_malloc, zeroed_calloc))
    return {"malloc": ctypes.cast(zeroed_malloc, ctypes.c_void_p).value,
            "calloc": ctypes.cast(zeroed_calloc, ctypes.c_void_p).value}


def _loaded_libvpx() -> list[tuple[str, int, int]]:
    """(path, mapping start, its file offset) of the lowest mapping of each loaded libvpx."""
    found: dict[str, tuple[int, int]] = {}
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or not os.path.basename(fields[5].strip()).startswith("libvpx"):
                    continue
                path = fields[5].strip()
                start, offset = int(fields[0].split("-")[0], 16), int(fields[2], 16)
                if path not in found or start < found[path][0]:
                    found[path] = (start, offset)
    except OSError:
        return []
    return [(path, start, offset) for path, (start, offset) in found.items()]


def _allocation_slots(path: str) -> list[tuple[str, int]]:
    """(symbol, GOT slot's virtual address) for each ``malloc``/``calloc`` import of the ELF
    shared library at ``path``; ValueError for anything but a little-endian 64-bit ELF of a known
    machine, or one mapped at a nonzero first segment address (the bias would be ambiguous)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != _ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian 64-bit ELF file")
    machine, = struct.unpack_from("<H", data, 18)
    if machine not in _GOT_RELOCATIONS:
        raise ValueError(f"{path}: ELF machine {machine} is not x86-64 or AArch64")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None or not loads or min(loads)[0] != min(loads)[1]:
        raise ValueError(f"{path}: no dynamic section, or a first segment not at its file offset")

    def file_offset(vaddr: int) -> int:
        for seg_vaddr, seg_offset, size in loads:
            if seg_vaddr <= vaddr < seg_vaddr + size:
                return vaddr - seg_vaddr + seg_offset
        raise ValueError(f"{path}: address {vaddr:#x} is in no loaded segment")

    tags: dict[int, int] = {}
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == _DT_NULL:
            break
        tags.setdefault(tag, value)
    if _DT_SYMTAB not in tags or _DT_STRTAB not in tags:
        raise ValueError(f"{path}: no dynamic symbol table")
    symtab, strtab = file_offset(tags[_DT_SYMTAB]), file_offset(tags[_DT_STRTAB])
    kinds = _GOT_RELOCATIONS[machine]
    slots = []
    for table, size in ((_DT_JMPREL, _DT_PLTRELSZ), (_DT_RELA, _DT_RELASZ)):
        if table not in tags:
            continue
        start = file_offset(tags[table])
        for pos in range(start, start + tags.get(size, 0), 24):
            r_offset, r_info, _ = struct.unpack_from("<QQq", data, pos)
            if r_info & 0xFFFFFFFF not in kinds:
                continue
            st_name, = struct.unpack_from("<I", data, symtab + 24 * (r_info >> 32))
            name = data[strtab + st_name:data.index(b"\0", strtab + st_name)].decode("ascii", "replace")
            if name in ("malloc", "calloc"):
                slots.append((name, r_offset))
    return slots


def _write_slot(address: int, value: int) -> int:
    """Store ``value`` in the pointer-sized slot at ``address`` (lifting a read-only protection
    for the write); returns the slot's previous value."""
    slot = ctypes.c_void_p.from_address(address)
    page = os.sysconf("SC_PAGE_SIZE")
    base = address & ~(page - 1)
    protection = _protection(address)
    if protection & _PROT_WRITE:
        old, slot.value = slot.value, value
        return old
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(base, page, protection | _PROT_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    old, slot.value = slot.value, value
    libc.mprotect(base, page, protection)
    return old


def _protection(address: int) -> int:
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                perms = fields[1]
                return ((_PROT_READ if "r" in perms else 0) | (_PROT_WRITE if "w" in perms else 0)
                        | (_PROT_EXEC if "x" in perms else 0))
    raise ValueError(f"address {address:#x} is not mapped")


@atexit.register
def _restore() -> None:
    """Put the original pointers back before the interpreter (and the callbacks) go away."""
    with _lock:
        for slots in _patched.values():
            for address, original in slots:
                try:
                    _write_slot(address, original)
                except (OSError, ValueError):
                    pass
        _patched.clear()

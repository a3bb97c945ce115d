"""Exact and near-duplicate images: 256-bit perceptual hashes, their bit distances, and groups of copies."""

import numpy as np
from PIL import Image

# Perceptual hashes (256 bits) this many bits apart or fewer count as the same picture: re-encoded, resized
# or slightly edited. Coarser hashes (64 bits) put thousands of merely similar brain slices, chained
# together, into one "duplicate" group on this dataset.
HASH_SIDE = 16


# Hashes compared per block: 64 x 6,000 x 32 bytes is ~50 MB, where all at once would be N x N x 32.
HASH_BLOCK = 64


NEAR_DUPLICATE_BITS = 14


def perceptual_hash(rgb: np.ndarray) -> np.ndarray:
    """256-bit difference hash of the grayscale image (4 uint64): robust to re-encoding, resizing, small edits."""
    gray = Image.fromarray(rgb).convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.BILINEAR)
    px = np.asarray(gray, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).flatten()
    return np.packbits(bits).view(">u8").astype(np.uint64)


def hamming_matrix_rows(hashes: np.ndarray, others: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bit distances between hashes[start:stop] and every hash in others, as a small int matrix."""
    x = np.bitwise_xor(hashes[start:stop, None, :], others[None, :, :])
    bytes_ = x.view(np.uint8).reshape(x.shape[0], x.shape[1], -1)
    return np.unpackbits(bytes_, axis=2).sum(axis=2, dtype=np.int16)


def group_duplicates(sha: list[str], phash: np.ndarray, max_bits: int) -> list[int]:
    parent = list(range(len(sha)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first: dict[str, int] = {}
    for i, s in enumerate(sha):
        if s in first:
            union(i, first[s])
        else:
            first[s] = i
    for start in range(0, len(sha), HASH_BLOCK):
        stop = min(start + HASH_BLOCK, len(sha))
        dist = hamming_matrix_rows(phash, phash, start, stop)
        rows, cols = np.nonzero(dist <= max_bits)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if i < c:
                union(i, int(c))
    return [find(i) for i in range(len(sha))]

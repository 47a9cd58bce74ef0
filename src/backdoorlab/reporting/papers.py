"""The papers' CIFAR-10 purification figures (PreActResNet-18, 10 % poison, 1 % clean pool), to set
our own results beside them. Transcribed in ``shared/design/ALGORITHMS.md`` (E.1, E.3) from the
figures of the NFT (ECCV 2024) and FIP (CCS 2024) repositories."""

from __future__ import annotations

NFT_TABLE_1 = "NFT Table 1"
FIP_TABLE_6 = "FIP Table 6"

# attack -> the backdoored model's ACC in both papers (their ASR before is 100)
ACC_BEFORE = {"badnets": 92.96, "blend": 94.11}

# (attack, our defense name, source) -> (ASR after, ACC after)
PUBLISHED = {
    ("badnets", "anp", NFT_TABLE_1): (4.87, 85.92),
    ("badnets", "anp", FIP_TABLE_6): (6.87, 86.92),
    ("badnets", "i_bau", NFT_TABLE_1): (2.84, 85.96),
    ("badnets", "awm", NFT_TABLE_1): (5.72, 87.85),
    ("badnets", "ft_sam", NFT_TABLE_1): (4.34, 86.17),
    ("badnets", "rnp", NFT_TABLE_1): (2.75, 88.46),
    ("badnets", "nft", NFT_TABLE_1): (1.74, 90.82),
    ("badnets", "fip", FIP_TABLE_6): (1.86, 89.32),
    ("blend", "anp", NFT_TABLE_1): (4.77, 87.61),
    ("blend", "anp", FIP_TABLE_6): (5.77, 87.61),
    ("blend", "i_bau", NFT_TABLE_1): (3.81, 89.10),
    ("blend", "awm", NFT_TABLE_1): (5.53, 90.84),
    ("blend", "ft_sam", NFT_TABLE_1): (2.13, 88.93),
    ("blend", "rnp", NFT_TABLE_1): (0.91, 91.53),
    ("blend", "nft", NFT_TABLE_1): (0.31, 93.17),
    ("blend", "fip", FIP_TABLE_6): (0.38, 92.17),
}


def published(attack: str, defense: str) -> list[tuple[str, float, float]]:
    """``(source, ACC drop, ASR after)`` of every published figure for this attack and defense (none
    for a defense the papers did not run)."""
    return [(source, ACC_BEFORE[a] - acc, asr) for (a, d, source), (asr, acc) in PUBLISHED.items()
            if (a, d) == (attack, defense)]

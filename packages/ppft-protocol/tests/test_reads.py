"""How much a read asks for: small for tiny frames, bulk while large frames stream in."""

from __future__ import annotations

from ppft_protocol import READ_SIZE, READ_SIZE_BULK, next_read_size


def test_a_read_that_fills_its_buffer_makes_the_next_one_bulk():
    assert next_read_size(READ_SIZE, READ_SIZE) == READ_SIZE_BULK


def test_tiny_frames_bring_the_read_size_back_down():
    assert next_read_size(READ_SIZE_BULK, 47) == READ_SIZE


def test_a_large_read_that_did_not_fill_keeps_the_bulk_size():
    assert next_read_size(READ_SIZE_BULK, READ_SIZE * 3) == READ_SIZE_BULK


def test_small_reads_stay_small():
    assert next_read_size(READ_SIZE, 1000) == READ_SIZE


def test_the_small_size_stays_under_glibcs_mmap_threshold():
    assert READ_SIZE < 128 * 1024 <= READ_SIZE_BULK

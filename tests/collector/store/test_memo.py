"""collector.store.memo: one ask between threads that want the same fact at once."""

from __future__ import annotations

import threading

from collector.store.memo import Memo


def test_threads_asking_at_once_share_one_answer() -> None:
    memo: Memo[str, int] = Memo(60.0)
    started, release = threading.Event(), threading.Event()
    asks: list[int] = []

    def ask() -> int:
        asks.append(1)
        started.set()
        release.wait(10)
        return 42

    got: list[int] = []
    first = threading.Thread(target=lambda: got.append(memo.get("gpu", ask)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: got.append(memo.get("gpu", ask)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert got == [42, 42] and asks == [1]
    assert memo.get("job", lambda: 7) == 7  # another key is asked on its own


def test_an_answer_asked_before_forget_is_not_kept() -> None:
    """A write lands while the first point is being asked: the answer may predate the write."""
    memo: Memo[str, int] = Memo(60.0)

    def ask_while_written() -> int:
        memo.forget()
        return 1

    assert memo.get("gpu", ask_while_written) == 1
    assert memo.get("gpu", lambda: 2) == 2  # asked again, not the stale 1
    assert memo.get("gpu", lambda: 3) == 2  # kept now


def test_an_answer_is_asked_again_after_its_time() -> None:
    memo: Memo[str, int] = Memo(0.0)
    assert memo.get("gpu", lambda: 1) == 1
    assert memo.get("gpu", lambda: 2) == 2
    memo.ttl_s = 60.0
    memo.forget("gpu")
    assert memo.get("gpu", lambda: 3) == 3
    assert memo.get("gpu", lambda: 4) == 3


def test_peek_gives_only_a_fresh_answer_and_never_asks() -> None:
    memo: Memo[str, int | None] = Memo(60.0)
    assert memo.peek("gpu") is None  # not known
    assert memo.get("gpu", lambda: 5) == 5
    assert memo.peek("gpu") == 5
    memo.ttl_s = 0.0
    assert memo.peek("gpu") is None  # too old

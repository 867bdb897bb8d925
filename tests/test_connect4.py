"""Tests for ablation_harness.connect4 against reference rules written here, cell by cell."""
import numpy as np
import pytest
import torch

import ablation_harness.connect4 as c4

DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def brute_four(plane) -> bool:
    """Reference: scan every cell and direction for four pieces in a row."""
    for r in range(6):
        for c in range(7):
            for dr, dc in DIRECTIONS:
                cells = [(r + i * dr, c + i * dc) for i in range(4)]
                if all(0 <= rr < 6 and 0 <= cc < 7 and plane[rr, cc] for rr, cc in cells):
                    return True
    return False


def ref_drop(own, opp, col):
    """Reference: put an own piece into the lowest empty cell of `col` (row 0 = top)."""
    own = np.array(own, np.float32)
    for r in range(5, -1, -1):
        if own[r, col] == 0 and opp[r, col] == 0:
            own[r, col] = 1
            return own
    raise ValueError("full column")


def position(*rows):
    """Own (X) and opponent (O) planes [1, 6, 7] from six strings, top row first."""
    grid = np.array([list(r) for r in rows])
    return (grid == "X").astype(np.float32)[None], (grid == "O").astype(np.float32)[None]


def scripted(cols):
    """A player that plays cols[k] with its (k+1)-th piece."""
    return lambda own, opp: np.eye(7, dtype=np.float32)[[cols[int(own[0].sum())]]]


@pytest.fixture(scope="module")
def games():
    return c4.generate_games(12, seed=5, depth="smoke")


def test_has_four_matches_brute_force():
    rng = np.random.default_rng(0)
    planes = (rng.random((1500, 6, 7)) < rng.uniform(0.1, 0.6, (1500, 1, 1))).astype(np.float32)
    expected = np.array([brute_four(p) for p in planes])
    assert 0.1 < expected.mean() < 0.9
    np.testing.assert_array_equal(c4.has_four(planes), expected)
    np.testing.assert_array_equal(c4.has_four(planes.reshape(30, 50, 6, 7)), expected.reshape(30, 50))


def test_drop_legal_and_winning_moves_match_reference():
    boards = c4.random_boards(200, seed=1, max_pieces=36).numpy()
    n_full = n_win = 0
    for own, opp in zip(boards[:, 0], boards[:, 1]):
        legal, wins = c4.legal_moves(own, opp), c4.winning_moves(own[None], opp[None])[0]
        for c in range(7):
            full = own[0, c] + opp[0, c] > 0
            n_full += full
            assert legal[c] == (not full)
            if full:
                assert not wins[c]
                continue
            ref = ref_drop(own, opp, c)
            np.testing.assert_array_equal(c4.drop(own, opp, c), ref)
            assert wins[c] == brute_four(ref)
            n_win += wins[c]
    assert n_full > 0 and n_win > 0


def test_is_draw_on_full_boards():
    own = np.zeros((6, 7), np.float32)
    own[:, [0, 1, 4, 5]] = [[1, 0, 1, 0]] * 3 + [[0, 1, 0, 1]] * 3            # no four anywhere
    own[:, [2, 3, 6]] = [[1, 1, 0], [0, 0, 1]] * 3
    opp = 1 - own
    assert not brute_four(own) and not brute_four(opp)
    assert c4.is_draw(own, opp)
    won = own.copy()
    won[5, :4] = 1
    assert not c4.is_draw(won, 1 - won) and not c4.is_draw(np.zeros((6, 7)), np.zeros((6, 7)))


def test_random_boards_are_reachable_without_four():
    b = c4.random_boards(400, seed=3).numpy()
    own, opp, side = b[:, 0], b[:, 1], b[:, 2]
    n_own, n_opp = own.sum((1, 2)), opp.sum((1, 2))
    pieces = n_own + n_opp
    assert pieces.min() == 0 and 19 <= pieces.max() <= 21
    assert not (own * opp).any()
    assert not any(brute_four(p) for p in np.concatenate([own, opp]))
    occ = own + opp
    assert (occ[:, :-1] <= occ[:, 1:]).all()                                  # no piece floats over an empty cell
    first = side[:, 0, 0] == 1
    assert (side == side[:, :1, :1]).all()
    np.testing.assert_array_equal(first, pieces % 2 == 0)
    np.testing.assert_array_equal(n_opp - n_own, np.where(first, 0, 1))       # first player has the extra piece
    assert torch.equal(c4.random_boards(50, seed=3), c4.random_boards(50, seed=3))
    assert not torch.equal(c4.random_boards(50, seed=3), c4.random_boards(50, seed=4))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_teacher_takes_an_immediate_win(depth):
    own, opp = position(".......", ".......", ".......", "......X", "O.....X", "OO.O..X")    # win beats block (col 2)
    assert c4.teacher_policy(own, opp, depth=depth)[0, 6] > 0.999
    own, opp = position(".......", ".......", ".......", "..XO...", ".XOO...", "XOOX...")   # diagonal win in col 3
    assert brute_four(ref_drop(own[0], opp[0], 3))
    assert c4.teacher_policy(own, opp, depth=depth)[0, 3] > 0.999


@pytest.mark.parametrize("depth", [2, 4])
def test_teacher_blocks_an_immediate_loss(depth):
    own, opp = position(".......", ".......", ".......", ".......", "X......", "OOO.XX.")
    assert c4.teacher_policy(own, opp, depth=depth)[0, 3] > 0.999
    own, opp = position(".......", ".......", "...O...", "...O...", "X..O...", "OX.X.X.")
    assert c4.teacher_policy(own, opp, depth=depth)[0, 3] > 0.999


def test_deeper_teacher_stops_a_double_threat():
    own, opp = position(".......", ".......", ".......", ".......", ".......", "..OO..X")
    p = c4.teacher_policy(own, opp, depth=4)[0]
    assert p[1] + p[4] > 0.999                     # any other move lets O make two threats at once


def test_teacher_beats_random_far_more_often_than_random_does():
    rand = c4.match(c4.random_policy, c4.random_policy, 60, seed=0)
    smoke = c4.teacher_win_rate(60, seed=0, depth="smoke")
    default = c4.teacher_win_rate(30, seed=0)
    assert 0.25 < rand["win"] < 0.75
    assert smoke["win"] >= 0.9 and default["win"] >= 0.9
    assert min(smoke["win"], default["win"]) - rand["win"] >= 0.25


def test_games_replay_under_reference_rules(games):
    assert len(games) == 24 and games.outcome.tolist().count(0) < 24
    for i in range(len(games)):
        g, first, second = games[i], np.zeros((6, 7)), np.zeros((6, 7))
        n = len(g["move"])
        for t, (board, col) in enumerate(zip(g["boards"], g["move"])):
            own, opp = (first, second) if t % 2 == 0 else (second, first)
            np.testing.assert_array_equal(board[0], own)
            np.testing.assert_array_equal(board[1], opp)
            assert (board[2] == (t % 2 == 0)).all()
            new = ref_drop(own, opp, col)
            first, second = (new, second) if t % 2 == 0 else (first, new)
            assert brute_four(new) == (t == n - 1 and games.outcome[i] != 0)
        if games.outcome[i] == 0:
            assert n == 42
        else:
            assert games.outcome[i] == (1 if (n - 1) % 2 == 0 else -1)     # the last mover won
        np.testing.assert_array_equal(g["value"], games.outcome[i] * np.where(np.arange(n) % 2 == 0, 1, -1))


def test_value_sign_on_constructed_games():
    g = c4.play_games(scripted([0, 0, 0, 0]), scripted([1, 1, 1]), 1, seed=0)
    np.testing.assert_array_equal(g.move, [0, 1, 0, 1, 0, 1, 0])
    assert g.outcome.tolist() == [1]
    np.testing.assert_array_equal(g.value, [1, -1, 1, -1, 1, -1, 1])
    last = g.boards[-1]                            # before the winning move: first player to move
    assert last[2].all() and last[0, :, 0].sum() == 3 and last[1, :, 1].sum() == 3
    g = c4.play_games(scripted([0, 2, 0, 2]), scripted([1, 1, 1, 1]), 1, seed=0)
    assert g.outcome.tolist() == [-1] and g.lengths.tolist() == [8]
    np.testing.assert_array_equal(g.value, [-1, 1] * 4)
    assert not g.boards[-1][2].any()


def test_mirrored_copy_is_the_exact_flip(games):
    for i in range(0, len(games), 2):
        a, b = games[i], games[i + 1]
        assert games.source[i] == games.source[i + 1] and not games.mirrored[i] and games.mirrored[i + 1]
        np.testing.assert_array_equal(b["boards"], a["boards"][..., ::-1])
        np.testing.assert_array_equal(b["policy"], a["policy"][:, ::-1])
        np.testing.assert_array_equal(b["move"], 6 - a["move"])
        np.testing.assert_array_equal(b["value"], a["value"])
    m = games.subset(np.flatnonzero(games.mirrored))
    np.testing.assert_allclose(c4.teacher_policy(m.boards[:, 0], m.boards[:, 1], depth="smoke"), m.policy, atol=1e-6)


def test_policy_rows_are_distributions_and_zero_on_full_columns(games):
    p = games.policy
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert (p >= 0).all()
    full = (games.boards[:, 0, 0] + games.boards[:, 1, 0]) > 0
    assert full.any() and (p[full] == 0).all()
    assert (p[np.arange(len(p)), games.move] > 0).all()
    o = games.subset(np.flatnonzero(~games.mirrored))
    np.testing.assert_allclose(c4.teacher_policy(o.boards[:, 0], o.boards[:, 1], depth="smoke"), o.policy, atol=1e-6)


def test_generation_is_deterministic_and_prefix_stable(games):
    again = c4.generate_games(12, seed=5, depth="smoke")
    for k in ("boards", "policy", "value", "move", "lengths"):
        np.testing.assert_array_equal(getattr(again, k), getattr(games, k))
    fewer = c4.generate_games(3, seed=5, depth="smoke", mirror=False)
    np.testing.assert_array_equal(fewer.move, games.subset([0, 2, 4]).move)
    other = c4.generate_games(12, seed=6, depth="smoke")
    assert not np.array_equal(other.lengths, games.lengths) or not np.array_equal(other.move, games.move)


def test_cache_hit_does_not_regenerate(tmp_path, monkeypatch):
    calls, real = [], c4.generate_games
    monkeypatch.setattr(c4, "generate_games", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = c4.cached_games(tmp_path, 4, seed=1, depth="smoke")
    second = c4.cached_games(tmp_path, 4, seed=1, depth=2)           # same settings, depth given by number
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [c4.cache_path(tmp_path, 4, 1, "smoke").name]
    for k in c4._ARRAYS:
        np.testing.assert_array_equal(getattr(second, k), getattr(first, k))
        assert getattr(second, k).dtype == getattr(first, k).dtype
    assert second.settings == first.settings == c4.game_settings(4, 1, "smoke")
    c4.cached_games(tmp_path, 4, seed=1, depth="smoke", temperature=1.0)
    assert len(calls) == 2 and len(list(tmp_path.glob("connect4_*.npz"))) == 2


def test_padding_mask_matches_lengths(games):
    p = c4.to_padded(games)
    n, t = len(games), int(games.lengths.max())
    assert p["boards"].shape == (n, t, 3, 6, 7) and p["policy"].shape == (n, t, 7)
    assert p["value"].shape == p["mask"].shape == (n, t) and p["mask"].dtype == torch.bool
    assert torch.equal(p["lengths"], torch.as_tensor(games.lengths))
    assert torch.equal(p["mask"], torch.arange(t)[None] < p["lengths"][:, None])
    for i in range(n):
        k = int(games.lengths[i])
        np.testing.assert_array_equal(p["boards"][i, :k].numpy(), games[i]["boards"])
        np.testing.assert_array_equal(p["policy"][i, :k].numpy(), games[i]["policy"])
        np.testing.assert_array_equal(p["value"][i, :k].numpy(), games[i]["value"])
        assert not p["boards"][i, k:].any() and not p["policy"][i, k:].any()


def test_split_by_game_keeps_mirrors_together():
    g = c4.generate_games(20, seed=0, depth=1)
    train, val = c4.split_games(g, 0.25, seed=0)
    assert len(val) == 10 and len(train) == 30
    assert not set(train.source) & set(val.source)
    for part in (train, val):
        ids, counts = np.unique(part.source, return_counts=True)
        assert (counts == 2).all() and part.mirrored.sum() == len(ids)
    assert len(train.boards) + len(val.boards) == len(g.boards)
    np.testing.assert_array_equal(c4.split_games(g, 0.25, seed=0)[1].source, val.source)
    assert not np.array_equal(c4.split_games(g, 0.25, seed=1)[1].source, val.source)

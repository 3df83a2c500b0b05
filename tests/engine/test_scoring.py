import pytest

from xgblora_engine.scoring import mean_scores, scored, token_f1


def test_token_f1():
    assert token_f1("LATIN SMALL LETTER E", "LATIN SMALL LETTER E") == 1.0
    assert token_f1("", "") == 1.0 and token_f1("a", "") == 0.0 and token_f1("x y", "a b") == 0.0
    assert token_f1("LATIN LETTER", "LATIN SMALL LETTER A") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("LATIN CAPITAL LETTER E", "LATIN SMALL LETTER E") == pytest.approx(0.75)


def test_scored_answers_and_their_means():
    answers = [scored("p", "EURO SIGN", "EURO SIGN"), scored("q", "EURO SIGN", "DOLLAR SIGN")]
    assert [a.exact for a in answers] == [True, False] and answers[1].token_f1 == 0.5
    assert mean_scores(answers) == {"token_f1": 0.75, "exact_match": 0.5}

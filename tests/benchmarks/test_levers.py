from benchmarks.levers import add_section


def test_a_levers_cost_table_replaces_its_own_and_keeps_the_others(tmp_path):
    path = tmp_path / "levers_cost.md"
    add_section(path, "#### rank 8\n\n| a | 1 |\n")
    add_section(path, "#### κ 40\n\n| b | 2 |\n")
    add_section(path, "#### rank 8\n\n| a | 3 |\n")  # measured again
    assert path.read_text() == "#### rank 8\n\n| a | 3 |\n\n#### κ 40\n\n| b | 2 |\n"

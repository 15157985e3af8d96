"""The chunker on real-looking text of several scripts and layouts: every chunk within the cap, nothing lost,
cuts at paragraphs, lines of code/tables/lists, and sentences (CJK included), never inside a hard-wrapped one."""

from __future__ import annotations

import base64
import random
import textwrap

import pytest

from synthgen.recipes.chunking import chunk_text
from synthgen.tokens import count_tokens

CHINESE = ("长江是中国最长的河流，全长约六千三百公里，发源于青藏高原，向东流入东海。"
           "长江流域面积广阔，哺育了沿岸数亿人口，是中国经济最发达的地区之一。"
           "三峡大坝位于湖北省宜昌市，是世界上最大的水力发电站！"
           "每年春天，江水上涨，渔民们会在岸边修补渔网，等待新的捕鱼季节。"
           "你知道长江的源头在哪里吗？科学家们经过多次考察，才确定了它的正源。")
JAPANESE = ("東京は日本の首都であり、世界有数の大都市です。"
            "江戸時代には将軍の城下町として栄え、明治維新の後に東京と改名されました。"
            "現在では、千四百万人以上の人々がこの街で暮らしています！"
            "春には上野公園の桜を見るために、多くの観光客が訪れます。"
            "あなたは東京タワーに登ったことがありますか？")
THAI = ("กรุงเทพมหานครเป็นเมืองหลวงและเมืองที่มีประชากรมากที่สุดของประเทศไทย "
        "แม่น้ำเจ้าพระยาไหลผ่านใจกลางเมืองและเป็นเส้นทางคมนาคมที่สำคัญมาตั้งแต่อดีต "
        "ตลาดน้ำหลายแห่งยังคงเปิดให้นักท่องเที่ยวเข้าชมในช่วงเช้าของทุกวัน ")
ENGLISH = ("The river bank was crowded with small boats painted in bright colours. Fishermen mended their nets "
           "while children ran along the path, shouting to one another. By noon the market had opened, and the "
           "smell of grilled fish drifted across the water. ")


def non_space(text: str) -> str:
    return "".join(text.split())


def assert_sound(text: str, chunks: list[str], cap: int) -> None:
    """Every chunk within the cap, none empty, and together exactly the text's characters (whitespace aside)."""
    assert chunks and all(chunks)
    assert max(count_tokens(chunks)) <= cap
    assert non_space("".join(chunks)) == non_space(text)


@pytest.mark.parametrize(("name", "text", "ending"), [
    ("chinese", CHINESE * 12, "。！？"),
    ("japanese", JAPANESE * 12, "。！？"),
    ("english", ENGLISH * 20, "."),
])
def test_sentence_scripts_are_cut_at_sentence_ends(name: str, text: str, ending: str) -> None:
    chunks = chunk_text(text, 120)
    assert len(chunks) > 3
    assert_sound(text, chunks, 120)
    assert all(chunk[-1] in ending for chunk in chunks), name


@pytest.mark.parametrize(("name", "text"), [
    ("thai", THAI * 40),
    ("nbsp", "\u00a0".join(ENGLISH.replace(".", ",").split()) * 12),  # no sentence end, no ASCII space
    ("base64", base64.b64encode(random.Random(5).randbytes(16_000)).decode()),
    ("thai_without_spaces", THAI.replace(" ", "") * 30),
])
def test_unspaced_and_unknown_text_is_cut_within_the_cap(name: str, text: str) -> None:
    chunks = chunk_text(text, 100)
    assert len(chunks) > 3, name
    assert_sound(text, chunks, 100)


def test_unknown_text_is_not_collapsed_into_a_few_tokens() -> None:
    blob = base64.b64encode(random.Random(1).randbytes(3_000)).decode().replace("/", "x").replace("+", "y")
    assert count_tokens([blob])[0] >= len(blob) // 3
    assert count_tokens([THAI * 10])[0] >= len(THAI * 10) // 3


def test_paragraphs_are_cut_first_and_newlines_kept() -> None:
    paragraphs = [ENGLISH * 2, "A short one.", ENGLISH * 3]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, 160)
    assert_sound(text, chunks, 160)
    assert chunks == [paragraphs[0] + "\n\nA short one.", paragraphs[2].rstrip()]  # the third fits: no cut inside it


def test_code_tables_and_lists_are_cut_between_lines() -> None:
    code = "def totals(rows):\n" + "".join(f"    total_{i} = sum(row[{i}] for row in rows)\n" for i in range(60))
    table = "| city | population |\n|---|---|\n" + "".join(f"| town {i} | {1000 + i} |\n" for i in range(80))
    items = "Shopping list:\n" + "".join(f"- {i} kilograms of ripe tomatoes from the market\n" for i in range(60))
    for text in (code, table, items):
        chunks = chunk_text(text, 100)
        assert len(chunks) > 2
        assert_sound(text, chunks, 100)
        lines = set(text.split("\n"))
        assert all(line in lines for chunk in chunks for line in chunk.split("\n"))  # whole lines only
        assert all(chunk.count("\n") >= 3 for chunk in chunks[:-1])


def test_hard_wrapped_prose_is_cut_only_at_sentence_ends() -> None:
    prose = " ".join(f"Sentence {i} tells of the river bank and the many colourful boats moored by the old mill."
                     for i in range(60))
    text = "\n".join(textwrap.wrap(prose, 62))
    chunks = chunk_text(text, 100)
    assert len(chunks) > 3
    assert_sound(text, chunks, 100)
    assert all(chunk.endswith("mill.") and chunk.startswith("Sentence") for chunk in chunks)
    assert all("\n" in chunk for chunk in chunks)


def test_an_overlong_sentence_is_cut_by_words() -> None:
    sentence = " ".join(f"word{i}" for i in range(400)) + "."
    chunks = chunk_text(sentence, 64)
    assert_sound(sentence, chunks, 64)
    assert " ".join(chunks) == sentence


def test_blank_text_has_no_chunks() -> None:
    assert chunk_text(" \n\u00a0 ", 64) == []

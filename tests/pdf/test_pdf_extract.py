"""Extraction and cleanup: pages match the text, hyphens joined, running headers dropped, metadata kept."""

from __future__ import annotations

from pdf_samples import marked_page_numbers, marked_pages

from rhizome.pdf.extract import clean_pages, page_range, read_pdf
from rhizome.pdf.pipeline import FileTask, extract_file
from samples.make_pdfs import write_pdf


def extract(path, chunk_size=1000, overlap=150):
    return extract_file(FileTask(str(path), path.name, "0" * 64, chunk_size, overlap, 0))


def test_page_numbers_match_the_text(tmp_path):
    path = write_pdf(tmp_path / "marked.pdf", marked_pages(7), font=None,
                     header="Marker Report", footer="Page {page} of {pages}")
    result = extract(path, chunk_size=600, overlap=100)
    assert result.reason is None and result.pages == 7
    spanning = 0
    for chunk in result.chunks:
        pages = marked_page_numbers(chunk["text"])
        assert pages, chunk["text"]
        assert pages[0] == chunk["page_start"] and pages[-1] == chunk["page_end"], chunk
        assert all(chunk["page_start"] <= p <= chunk["page_end"] for p in pages)
        spanning += chunk["page_end"] > chunk["page_start"]
    assert spanning, "some chunk should span two pages"
    assert {p for c in result.chunks for p in marked_page_numbers(c["text"])} == set(range(1, 8))


def test_repeated_header_and_footer_are_dropped(tmp_path):
    path = write_pdf(tmp_path / "report.pdf", marked_pages(4), font=None,
                     header="Quarterly Apiary Report", footer="Page {page} of {pages}")
    text = " ".join(chunk["text"] for chunk in extract(path).chunks)
    assert "Quarterly Apiary Report" not in text
    assert "Page" not in text and " of 4" not in text
    assert "Smoke were noted 1 times beside kwab" in text


def test_headers_are_kept_in_documents_under_three_pages():
    pages = ["Running Title\nBody text of the first page ends here.", "Running Title\nThe second page ends too."]
    assert clean_pages(pages).text.count("Running Title") == 2


def test_only_edge_lines_are_dropped():
    pages = [f"Header\nIntro {word}.\nThe same body line.\nMore {word}.\nEnd {word}.\nFooter {n}"
             for n, word in enumerate(["alpha", "beta", "gamma", "delta"])]
    text = clean_pages(pages).text
    assert "Header" not in text and "Footer" not in text
    assert text.count("The same body line.") == 4


def test_line_end_hyphenation_is_joined_but_real_hyphens_kept(tmp_path):
    paragraph = ("The colony holds a steady tempera-\nture all winter. The Franco-\nPrussian war is not about bees. "
                 "Bees visit the well-\nknown lime tree.")
    path = write_pdf(tmp_path / "hyphen.pdf", [[paragraph]], font=None)
    text = extract(path).chunks[0]["text"]
    assert "steady temperature all winter" in text
    assert "Franco-Prussian" in text
    assert "wellknown" in text  # documented: no dictionary, so a compound broken at its hyphen loses it


def test_lines_of_a_paragraph_are_joined_and_paragraphs_kept():
    raw = ("A heading\nThe first paragraph has a line that is quite long and goes on until the margin\n"
           "and ends here.\nThe second paragraph starts with a capital letter and is long enough to wrap\n"
           "before it too ends.")
    assert clean_pages([raw]).text == (
        "A heading\n\nThe first paragraph has a line that is quite long and goes on until the margin and ends "
        "here.\n\nThe second paragraph starts with a capital letter and is long enough to wrap before it too ends.")


def test_metadata_and_non_ascii_text_are_recorded(tmp_path):
    path = write_pdf(tmp_path / "meta.pdf", [["Herzliche Grüße: the brood nest stays near 35 °C."]],
                     title="Bienen im Winter", author="Jörg Müller", font=None)
    result = extract(path)
    assert (result.title, result.author) == ("Bienen im Winter", "Jörg Müller")
    chunk = result.chunks[0]
    assert "Grüße" in chunk["text"] and "35 °C" in chunk["text"]
    assert (chunk["title"], chunk["author"], chunk["source"]) == ("Bienen im Winter", "Jörg Müller", "pdf")
    assert chunk["char_count"] == len(chunk["text"])


def test_missing_metadata_is_none(tmp_path):
    path = write_pdf(tmp_path / "bare.pdf", [["Just a sentence of plain text without any metadata at all."]],
                     font=None)
    pages = read_pdf(path)
    assert pages.title is None and pages.author is None


def test_a_blank_page_keeps_the_page_numbers_after_it():
    clean = clean_pages(["The first page has text.", "", "The third page has text too."])
    third = clean.text.index("The third")
    assert page_range(third, len(clean.text), clean.page_offsets) == (3, 3)
    assert page_range(0, len(clean.text), clean.page_offsets) == (1, 3)
    assert clean.empty_pages == 1

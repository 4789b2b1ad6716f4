"""Write the demo's sample PDFs into ``PDFs/``: three short field notes, byte for byte the same on every run.

    python samples/make_pdfs.py [OUT_DIR]

Each PDF has title/author metadata, a running header and a "Field Notes — page N"
footer (which ``pdf_to_json.py`` should drop), a word hyphenated across a line end
("tempera-" / "ture", which it should join) and non-ASCII text ("Grüße", "°C").
Text is set in DejaVu Sans when the font is installed (Debian: fonts-dejavu-core);
otherwise in the core Helvetica font, which is Latin-1 only, so "—" becomes "-".

:func:`write_pdf` is also used by the tests and the benchmark to make PDFs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

from fpdf import FPDF

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
)
CREATED = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone.utc)  # fixed, so the files are reproducible
_LATIN1 = str.maketrans({"—": "-", "–": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "..."})


def unicode_font() -> str | None:
    """Path of a Unicode TrueType font on this system, or None."""
    return next((path for path in FONT_CANDIDATES if os.path.exists(path)), None)


def _latin1(text: str) -> str:
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")


def write_pdf(path: str | os.PathLike, pages: Sequence[Sequence[str]], *, title: str | None = None,
              author: str | None = None, header: str | None = None, footer: str | None = None,
              font: str | None = "auto", font_size: float = 11) -> Path:
    """Write a PDF: one list of paragraphs per page (a paragraph too long for its page flows onto the next).

    A ``"\\n"`` inside a paragraph forces a line break there. ``header`` is printed at
    the top of every page and ``footer`` (with ``{page}`` and ``{pages}`` filled in)
    at the bottom. ``font="auto"`` uses :func:`unicode_font` when there is one, ``None``
    the core Helvetica font (Latin-1 only), anything else a path to a TrueType font.
    """
    font_path = unicode_font() if font == "auto" else font
    family = "body" if font_path else "helvetica"
    text = (lambda s: s) if font_path else _latin1

    class _Document(FPDF):
        def header(self) -> None:
            if header:
                self.set_font(family, size=font_size - 2)
                self.cell(0, 8, text(header), align="C")
                self.ln(12)

        def footer(self) -> None:
            if footer:
                self.set_y(-15)
                self.set_font(family, size=font_size - 2)
                self.cell(0, 10, text(footer.format(page=self.page_no(), pages="{nb}")), align="C")

    pdf = _Document(format="A4")
    if font_path:
        pdf.add_font(family, fname=font_path)
    pdf.set_creation_date(CREATED)
    pdf.set_creator("RhizomeML samples/make_pdfs.py")
    if title:
        pdf.set_title(title)
    if author:
        pdf.set_author(author)
    pdf.set_auto_page_break(True, margin=20)
    for paragraphs in pages:
        pdf.add_page()
        pdf.set_font(family, size=font_size)
        for paragraph in paragraphs:
            pdf.multi_cell(0, font_size * 0.55, text(paragraph))
            pdf.ln(font_size * 0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


BEEKEEPING = [
    [
        "Beekeeping basics",
        ("A honey bee colony is one family: a single queen, tens of thousands of worker daughters and, in "
         "summer, a few hundred drones. The queen lays eggs and little else. The workers do everything else, "
         "and which job a worker does depends mostly on her age. Young bees clean cells and feed larvae; older "
         "bees build comb, guard the entrance and, for the last weeks of their lives, fly out to forage."),
        ("A new beekeeper does best to start with two colonies rather than one. With two hives you can compare "
         "them, and when one of them loses its queen you can give it a frame of eggs from the other so the "
         "bees can raise a new one."),
    ],
    [
        "The hive and the seasons",
        ("Most hives in use today are built from stacked boxes holding removable wooden frames. The lower "
         "boxes are the brood nest; the boxes on top, the supers, hold the honey you will take. A queen "
         "excluder between them keeps the queen from laying eggs in the honey."),
        ("Bees do not sleep through the winter. They form a tight cluster and shiver their flight muscles to "
         "keep the centre of the cluster warm, and when brood rearing starts again late in winter the colony "
         "keeps the brood nest at about 35 °C, a tempera-\nture it holds within a degree even when it freezes "
         "outside. A colony needs enough stored honey to fuel that heat until the first spring flowers."),
    ],
    [
        "Inspections",
        ("Open the hive on a warm, calm afternoon, when many foragers are out. Use a little cool smoke at the "
         "entrance and under the lid, wait a minute, and work slowly. Look for eggs, young larvae and a "
         "compact brood pattern: together they tell you the queen was laying within the last three days."),
        ("Keep a notebook. Write down the date, the weather, how many frames of brood and stores you saw and "
         "how the bees behaved. After a season the notes show you patterns that no single visit can."),
    ],
    [
        "Swarming and harvest",
        ("Swarming is how a colony reproduces: the old queen leaves with about half of the workers to found a "
         "new home. Queen cells hanging from the bottom of the frames in May are the warning sign. Giving the "
         "colony more room early, or splitting it on purpose, keeps most swarms at home."),
        ("Take honey only from frames that are capped with wax, because uncapped honey is still too wet and "
         "may ferment. Leave the colony enough for the winter. A friend in Bavaria ends every letter about "
         "her hives with \"Herzliche Grüße aus dem Bienengarten\", and a jar of honey usually follows."),
    ],
]

MUSHROOMS = [
    [
        "Growing oyster mushrooms",
        ("Oyster mushrooms are the easiest edible mushrooms to grow at home. They grow fast, they tolerate "
         "mistakes, and they will grow on many kinds of plant waste: straw, sawdust, cardboard, even used "
         "coffee grounds. What you buy is spawn, grain that the fungus has already colonised, and your job is "
         "to give it a larger meal and the right conditions."),
        ("Straw works best for a first attempt. Chop it into short pieces and pasteurise it, either by soaking "
         "it in water held at 70 °C for an hour or by soaking it for a day in a bucket of water with hydrated "
         "lime. Pasteurising does not sterilise the straw; it knocks back the moulds that would compete with "
         "the fungus while leaving harmless microbes in place."),
    ],
    [
        "Colonisation",
        ("Drain the straw until it is damp but no water drips when you squeeze a handful. Mix in the spawn, "
         "about one part spawn to ten parts straw by weight, and pack it firmly into plastic bags or buckets "
         "with holes drilled in the sides. Keep them somewhere dark at around 20 to 24 °C."),
        ("Over two or three weeks the white mycelium spreads through the straw and binds it into a solid "
         "block. Green or black patches mean mould has won in that spot; a block that smells sour was too wet "
         "or too warm. Both are common at first, and both are lessons rather than disasters."),
    ],
    [
        "Fruiting and harvest",
        ("When the block is fully white, move it to a cooler place with fresh air and indirect light. Cut "
         "small slits in the plastic where the mushrooms should form. Mist the air around the block twice a "
         "day: oyster mushrooms need humidity above 85 percent, but water sitting on the young caps spoils "
         "them."),
        ("Harvest a cluster when the caps are flat and the edges start to turn up, by twisting the whole "
         "cluster off at its base. A block gives two or three flushes, each a little smaller than the last. "
         "The spent straw makes an excellent mulch for the garden."),
    ],
]

BICYCLE = [
    [
        "Maintaining an old steel bicycle",
        ("An old steel bicycle can outlive its first owner if it gets a little care. Steel frames are easy to "
         "repair and forgiving of dents, but they rust from the inside. Once a year, take out the seat post, "
         "tip the frame to drain any water, and spray a rust inhibitor into the tubes."),
        ("Start every job by cleaning the part you will work on. Dirt hides cracks, and grit on a bearing "
         "ruins it faster than any distance ridden."),
    ],
    [
        "Chain and gears",
        ("A chain stretches as its pins and rollers wear. Measure it with a ruler: twelve full links of a new "
         "chain measure exactly twelve inches, and at twelve and one sixteenth it is time for a new one. "
         "Replace it in time and the sprockets last through several chains; wait too long and the new chain "
         "skips on the worn teeth."),
        ("Clean the chain with a rag and a little solvent, then put one drop of oil on each roller and wipe "
         "off what is left on the outside. Oil on the outside only collects dirt."),
    ],
    [
        "Brakes",
        ("Old rim brakes stop well when the pads are fresh and the rims are clean. Pads harden with age, so "
         "pads that look fine but squeal and slip should be replaced. Set each pad to meet the rim flat, "
         "with the front edge touching a moment before the back."),
        ("Brake cables fray where they enter the lever and stretch slowly over time. A new cable and housing "
         "cost little and make the brakes feel new."),
    ],
    [
        "Bearings",
        ("Hubs, bottom bracket and headset on older bicycles run on loose ball bearings held by adjustable "
         "cones or cups. Take them apart every few years, clean out the old grease, check the cones for "
         "pitting, and repack them with fresh grease."),
        ("Adjusting the cones is the one fiddly step. Tighten them until the play just disappears, then lock "
         "them with the locknut, and check again, since the locknut often shifts the adjustment a little."),
    ],
    [
        "Tyres and a last check",
        ("Check the tyre pressure every week: tyres lose air slowly even without a puncture. The right "
         "pressure is printed on the sidewall, and old tyres with cracked sidewalls should be replaced "
         "before they fail on a descent. Bikes stored in a shed over the winter, where it can drop below "
         "0 °C, need the same check before the first spring ride."),
        ("Before every ride, squeeze both brakes, lift each wheel and spin it, and check that the quick "
         "releases or axle nuts are tight. It takes a minute and catches most problems before they become "
         "accidents."),
    ],
]

SAMPLES = {
    "beekeeping_basics.pdf": ("Beekeeping Basics", "Mara Lindqvist", "Field Notes — Beekeeping", BEEKEEPING),
    "oyster_mushrooms.pdf": ("Growing Oyster Mushrooms", "Tomás Ferreira", "Field Notes — Mushrooms", MUSHROOMS),
    "steel_bicycle.pdf": ("Maintaining an Old Steel Bicycle", "Jo Okafor", "Field Notes — Bicycles", BICYCLE),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default="PDFs", help="folder to write the PDFs into (default: PDFs)")
    args = parser.parse_args(argv)
    if unicode_font() is None:
        print("no DejaVu Sans font found: writing Latin-1 text in Helvetica ('—' becomes '-')")
    for name, (title, author, header, pages) in SAMPLES.items():
        path = write_pdf(Path(args.out_dir) / name, pages, title=title, author=author, header=header,
                         footer="Field Notes — page {page}")
        print(f"wrote {path} ({len(pages)} pages)")


if __name__ == "__main__":
    main()

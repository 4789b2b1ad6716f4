"""Write the demo's sample chats: one person who keeps bees, grows mushrooms and repairs old bicycles.

    python samples/make_conversations.py [OUT_DIR]

Writes, byte for byte the same on every run:
    conversations.json          ChatGPT export (a list of conversations, each a message tree)
    message_feedback.json       ChatGPT export: the person's thumbs up / down, by message id
    conversations2.json         Claude export (the original tool's name for it)
    custom_conversations.json   the original README's custom format
    chat.jsonl                  Hugging Face chat format, one conversation per line

The exports carry what real ones do around the visible turns, so the demo
exercises the importer: hidden system messages, custom instructions,
regenerated answers and edited questions (abandoned branches, which the
formatter turns into preference pairs with the ratings of
``message_feedback.json``: see ``FEEDBACK`` and ``PREFERENCE_TRUTH``), a Python tool
call and its output, web browsing, reasoning, an image upload, a conversation
without ``current_node``; on the Claude side thinking and tool blocks, a
message with only flat ``text`` and an edit recorded through parent links.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhizome import atomic  # noqa: E402

NAMESPACE = uuid.UUID("9b6f3c52-4d1e-4c0a-9d55-7a2f1e0b8c31")
CLAUDE_ROOT = "00000000-0000-4000-8000-000000000000"
HIDDEN = {"is_visually_hidden_from_conversation": True}
UNSUPPORTED_BLOCK = "```\nThis block is not supported on your current device yet.\n```"


def uid(*names: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(names)))


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- ChatGPT

def text_content(text: str) -> dict:
    return {"content_type": "text", "parts": [text]}


def node(key: str, name: str, role: str, content: dict, *, model: str | None = None, recipient: str = "all",
         metadata: dict | None = None, author_name: str | None = None) -> dict:
    """One message node (parent, children and time are filled in by :func:`chatgpt_conversation`)."""
    meta = dict(metadata or {})
    if model:
        meta.setdefault("model_slug", model)
        meta.setdefault("default_model_slug", model)
    return {
        "name": name,
        "message": {
            "id": uid(key, name), "author": {"role": role, "name": author_name, "metadata": {}},
            "create_time": None, "update_time": None, "content": content, "status": "finished_successfully",
            "end_turn": role == "assistant" and recipient == "all" or None, "weight": 1.0, "metadata": meta,
            "recipient": recipient, "channel": None,
        },
    }


def chatgpt_conversation(key: str, title: str, start: float, tree: list[tuple[dict, str | None]],
                         current: str | None, model: str) -> dict:
    """``tree``: (node, parent name) in creation order; ``current``: the leaf shown last (None: not exported)."""
    mapping = {uid(key, "root"): {"id": uid(key, "root"), "message": None, "parent": None, "children": []}}
    for step, (spec, parent) in enumerate(tree):
        node_id = uid(key, spec["name"])
        parent_id = uid(key, parent or "root")
        message = spec["message"]
        hidden = message["metadata"].get("is_visually_hidden_from_conversation")
        message["create_time"] = None if hidden else start + 41.5 * step + (step % 3) * 0.25
        mapping[node_id] = {"id": node_id, "message": message, "parent": parent_id, "children": []}
        mapping[parent_id]["children"].append(node_id)
    times = [n["message"]["create_time"] for n in mapping.values() if n["message"] and n["message"]["create_time"]]
    conversation_id = uid(key)
    record = {
        "title": title, "create_time": start, "update_time": max(times), "mapping": mapping,
        "moderation_results": [], "current_node": uid(key, current) if current else None, "plugin_ids": None,
        "conversation_id": conversation_id, "conversation_template_id": None, "gizmo_id": None, "gizmo_type": None,
        "is_archived": False, "is_starred": None, "safe_urls": [], "default_model_slug": model,
        "conversation_origin": None, "voice": None, "async_status": None, "disabled_tool_ids": [],
        "id": conversation_id,
    }
    if current is None:
        del record["current_node"]
    return record


def linear(key: str, title: str, start: float, turns: list[str], model: str,
           preamble: list[dict] | None = None) -> dict:
    """A conversation without branches: hidden system message, then user/assistant turns."""
    tree = [(node(key, "system", "system", text_content(""), metadata=HIDDEN), None)]
    for spec in preamble or []:
        tree.append((spec, tree[-1][0]["name"]))
    for i, text in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        tree.append((node(key, f"turn-{i}", role, text_content(text), model=model if role == "assistant" else None),
                     tree[-1][0]["name"]))
    return chatgpt_conversation(key, title, start, tree, tree[-1][0]["name"], model)


CUSTOM_INSTRUCTIONS = {
    "content_type": "user_editable_context",
    "user_profile": "The user provided the following information about themselves. This user profile is shown to "
                    "you in all conversations they have.\nUser profile:\n```I keep six hives on the edge of town, "
                    "grow oyster and shiitake mushrooms in the cellar and fix up old steel bicycles.```",
    "user_instructions": "The user provided the additional info about how they would like you to respond:\n"
                         "```Use metric units. Be practical.```",
}


def chatgpt_export() -> list[dict]:
    conversations = []

    key = "spring-inspection"
    conversations.append(linear(key, "First spring inspection", 1709546400.0, [
        "It finally hit 15 °C today. What should I actually check on the first spring inspection, and how long "
        "can I keep the hive open?",
        "Keep it short, ten minutes at most, because the brood nest chills quickly below about 14 °C. Check four "
        "things: is there a laying queen (eggs standing upright in the cells are enough, you do not need to see "
        "her), how much sealed honey is left, how many frames the bees cover, and whether the brood pattern looks "
        "compact. If they have less than two frames of stores, feed 1:1 syrup or fondant right away. Note the "
        "number of seams of bees so you can compare in two weeks.",
        "One colony has lots of drone brood in worker cells, scattered all over. What does that mean?",
        "Bullet-shaped drone cappings scattered through worker cells usually mean a drone-laying queen or laying "
        "workers. If you see several eggs per cell or eggs stuck to the cell walls, it is laying workers; a "
        "single egg centred at the bottom points to a failing queen that has run out of sperm. A failing queen "
        "can be replaced; a laying-worker colony is best shaken out in front of the apiary and its frames shared "
        "among the strong colonies. Either way, do it soon, because the colony is dwindling every day.",
    ], "gpt-4o", preamble=[node(key, "context", "user", CUSTOM_INSTRUCTIONS,
                                metadata={**HIDDEN, "is_user_system_message": True})]))

    key = "demaree"
    tree = [
        (node(key, "system", "system", text_content(""), metadata=HIDDEN), None),
        (node(key, "q1", "user", text_content(
            "My strongest hive has queen cups with eggs in them. How does a Demaree split work, and will it stop "
            "them swarming?")), "system"),
        (node(key, "a1-first", "assistant", text_content(
            "A Demaree is a way to separate the queen from the brood. Put her below and the brood above."),
            model="gpt-4o"), "q1"),
        (node(key, "a1", "assistant", text_content(
            "In a Demaree you separate the queen from the brood inside one hive. Find the queen and leave her in "
            "the bottom box on one frame of open brood plus drawn comb or foundation. Put a queen excluder on "
            "top, then one or two empty supers, and move all the other brood frames into the top box. The "
            "nurse bees follow the brood upstairs, the queen has room to lay below, and the congestion that "
            "drives swarming is gone. It only works if you also destroy the queen cups and check the top box "
            "for new queen cells after seven days."), model="gpt-4o"), "q1"),
        (node(key, "q2", "user", text_content(
            "Why do I need to check the top box again after seven days?")), "a1"),
        (node(key, "a2", "assistant", text_content(
            "Because the brood you moved up still contains young larvae, and the bees up there no longer smell "
            "the queen's pheromone strongly. They will often start emergency queen cells on those larvae. A virgin "
            "that emerges in the top box will either fight her way down or leave with a swarm through any gap. "
            "After seven days every larva is too old to become a queen, so one careful check then, removing every "
            "queen cell, is enough."), model="gpt-4o"), "q2"),
        (node(key, "q3", "user", text_content("Can I use those queen cells instead of destroying them?")), "a2"),
        (node(key, "a3", "assistant", text_content(
            "Yes, and that is a good use for them. Take the frame with the best-looking sealed cell, two frames "
            "of stores and the bees on them, and put them in a nucleus box with its entrance reduced. Leave just "
            "one cell per nucleus so it does not cast swarms of its own. Within three to four weeks you should "
            "have a mated, laying queen to replace an old one or to start a new colony."), model="gpt-4o"), "q3"),
    ]
    conversations.append(chatgpt_conversation(key, "Demaree split for swarm control", 1714633200.0, tree, "a3",
                                              "gpt-4o"))

    key = "oyster-straw"
    tree = [
        (node(key, "system", "system", text_content(""), metadata=HIDDEN), None),
        (node(key, "q1-draft", "user", text_content("pasteurize straw how")), "system"),
        (node(key, "a1-draft", "assistant", text_content("Heat it in water."), model="gpt-4o-mini"), "q1-draft"),
        (node(key, "q1", "user", text_content(
            "How do I pasteurize chopped straw for oyster mushrooms without a big steam setup?")), "system"),
        (node(key, "a1", "assistant", text_content(
            "Soak the chopped straw in water at 65 to 75 °C for about an hour; a large pot on a camping burner "
            "or a 70-litre tub with an immersion heater both work. Keep a thermometer in the middle of the straw, "
            "not at the edge. Below 60 °C you will not kill the competing moulds, above 80 °C you start to kill "
            "the beneficial bacteria that protect the substrate. Drain it until you can only squeeze out a few "
            "drops by hand, then let it cool below 30 °C before you mix in the spawn."), model="gpt-4o"), "q1"),
        (node(key, "q2", "user", text_content(
            "How much spawn per bag, and do I need to poke holes?")), "a1"),
        (node(key, "a2", "assistant", text_content(
            "Use about 10 to 15 percent spawn by wet weight, so 1 to 1.5 kg of grain spawn for a 10 kg bag. More "
            "spawn colonises faster and leaves less room for contaminants. Yes, make holes: a few dozen small "
            "slits or pin holes for air exchange during colonisation, then larger X-shaped cuts where you want "
            "the clusters once the bag is white, usually after two to three weeks at 20 to 24 °C."),
            model="gpt-4o"), "q2"),
    ]
    conversations.append(chatgpt_conversation(key, "Pasteurizing straw for oysters", 1715850000.0, tree, "a2",
                                              "gpt-4o"))

    key = "green-spawn"
    image = {"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-7Kc2QpRx4Vt9",
             "size_bytes": 231442, "width": 1024, "height": 1365, "fovea": None,
             "metadata": {"dalle": None, "gizmo": None, "sanitized": True}}
    tree = [
        (node(key, "system", "system", text_content(""), metadata=HIDDEN), None),
        (node(key, "q1", "user", {"content_type": "multimodal_text", "parts": [
            image, "Here is a jar of rye grain spawn, two weeks after inoculation. What are these green patches? "
                   "The white mycelium stops right where they start."]},
              metadata={"attachments": [{"id": "file-7Kc2QpRx4Vt9", "name": "jar.jpg", "mime_type": "image/jpeg"}]}),
         "system"),
        (node(key, "thoughts", "assistant", {"content_type": "thoughts", "thoughts": [
            {"summary": "Looking at the colour", "content": "Green, powdery, with a white halo: classic Trichoderma.",
             "chunks": [], "finished": True}], "source_analysis_msg_id": uid(key, "analysis")}, model="o3",
              metadata={"reasoning_status": "is_reasoning"}), "q1"),
        (node(key, "recap", "assistant", {"content_type": "reasoning_recap", "content": "Thought for 9 seconds"},
              model="o3", metadata={"reasoning_status": "reasoning_ended"}), "thoughts"),
        (node(key, "a1", "assistant", text_content(
            "That is almost certainly Trichoderma, the green mould that is the most common contaminant of grain "
            "spawn. The white edge around the green patches is the mould's own young mycelium, not your mushroom, "
            "and the sharp stop of your culture where it begins is typical. Do not open the jar indoors: the "
            "spores spread easily to every other jar. Put it in a bag and dispose of it, or pressure-cook it "
            "before opening."), model="o3"), "recap"),
        (node(key, "q2", "user", text_content(
            "I lost 3 of 12 jars this round, and 1 of 10 last time. Is my contamination rate getting worse, or "
            "is that just chance?")), "a1"),
        (node(key, "code", "assistant", {"content_type": "code", "language": "python", "response_format_name": None,
                                         "text": "from scipy.stats import fisher_exact\n"
                                                 "fisher_exact([[3, 9], [1, 9]])"},
              model="o3", recipient="python"), "q2"),
        (node(key, "output", "tool", {"content_type": "execution_output",
                                      "text": "SignificanceResult(statistic=3.0, pvalue=0.593984962406015)"},
              author_name="python", metadata={"is_complete": True}), "code"),
        (node(key, "a2", "assistant", text_content(
            "With numbers this small it could easily be chance: comparing 3 of 12 with 1 of 10 gives a p-value of "
            "about 0.6, nowhere near meaningful. That said, 25 percent is too high for a home setup; under 10 "
            "percent is a realistic target. The usual culprits are grain that was not soaked long enough "
            "(dry kernels protect endospores), too short a sterilisation (90 minutes at 15 psi for litre jars), "
            "and inoculating in still air without a still-air box. Change one thing per round so you can see "
            "which one helped."), model="o3"), "output"),
    ]
    conversations.append(chatgpt_conversation(key, "Green mould in grain spawn", 1717236000.0, tree, "a2", "o3"))

    key = "aw-hub"
    tree = [
        (node(key, "system", "system", text_content(""), metadata=HIDDEN), None),
        (node(key, "q1", "user", text_content(
            "My 1968 Raleigh has a Sturmey-Archer AW hub that slips in second gear under load, like pedalling "
            "through nothing. Where do I start?")), "system"),
        (node(key, "search", "assistant", text_content('search("Sturmey-Archer AW slipping second gear adjust")'),
              model="gpt-4o", recipient="browser"), "q1"),
        (node(key, "results", "tool", {"content_type": "tether_browsing_display",
                                       "result": "# 【0†Sturmey-Archer AW adjustment†sheldonbrown.com】\n"
                                                 "Put the shifter in 2nd; the end of the indicator rod should be "
                                                 "exactly flush with the end of the axle...",
                                       "summary": None, "assets": [], "tether_id": None},
              author_name="browser", metadata={"_cite_metadata": {"citation_format": {"name": "tether_og"}}}),
         "search"),
        (node(key, "a1", "assistant", text_content(
            "Start with the adjustment, which causes most slipping in second. Put the shifter in second gear and "
            "look through the window in the right-hand axle nut: the end of the indicator rod should sit exactly "
            "level with the end of the axle. If it is short of the end, turn the knurled adjuster on the cable a "
            "little at a time until it lines up, then lock it with the locknut. If it slips even when perfectly "
            "adjusted, the pawl springs are probably worn or gummed up with old oil."), model="gpt-4o"), "results"),
        (node(key, "q2", "user", text_content(
            "The adjustment was off by about 3 mm, fixed now. What oil should go in it?")), "a1"),
        (node(key, "a2", "assistant", text_content(
            "A light oil, roughly SAE 20 to 30; a good sewing-machine oil or a light motor oil both work. Add a "
            "teaspoon through the oil cap every month or two of regular riding, and never grease: grease makes the "
            "pawls stick so they do not engage, which is exactly the slipping you just fixed. If the hub has sat "
            "for years, flush it first with a little paraffin while turning the wheel, let it drain overnight, "
            "then oil it."), model="gpt-4o"), "q2"),
    ]
    conversations.append(chatgpt_conversation(key, "Sturmey-Archer AW slipping in 2nd", 1718965800.0, tree, "a2",
                                              "gpt-4o"))

    key = "cold-set"
    tree = [
        (node(key, "system", "system", text_content(""), metadata=HIDDEN), None),
        (node(key, "q1", "user", text_content(
            "My 1980s steel road frame has 126 mm rear spacing and I want a modern 130 mm wheel. Can I cold set "
            "it?")), "system"),
        (node(key, "a1", "assistant", text_content(
            "Yes, a 4 mm spread is routine for a steel frame with standard tubing. The tidy way is to bend each "
            "side 2 mm by pulling the stays outward with a threaded rod or a long lever, checking with a string "
            "from the rear dropouts around the head tube that the distance to the seat tube stays equal on both "
            "sides. Take it slowly and overbend a little, because steel springs back. Once the width is right, "
            "check that the dropouts are parallel again with dropout alignment tools, or the axle will be "
            "stressed."), model="gpt-4o"), "q1"),
        # The question sent with a typo, answered, then edited: a near-identical prompt, so a preference pair.
        (node(key, "q2-typo", "user", text_content("Do I need to worry about the derailer hanger after that?")),
         "a1"),
        (node(key, "a2-typo", "assistant", text_content(
            "Probably not. Hangers are tough, and if shifting feels fine you can leave it alone."), model="gpt-4o"),
         "q2-typo"),
        (node(key, "q2", "user", text_content("Do I need to worry about the derailleur hanger after that?")), "a1"),
        (node(key, "a2", "assistant", text_content(
            "Yes, check it, because spreading the stays tilts the dropouts slightly and the hanger with them. A "
            "hanger alignment gauge will show whether it is parallel to the wheel; bend it back carefully if it is "
            "out by more than a couple of millimetres at the rim. An aligned hanger makes indexed shifting much "
            "more precise, so it is worth the ten minutes even if shifting seems fine."), model="gpt-4o"), "q2"),
    ]
    conversations.append(chatgpt_conversation(key, "Spreading a steel frame to 130 mm", 1720342800.0, tree, "a2",
                                              "gpt-4o"))

    conversations.append(linear("wax-moth", "Storing comb without wax moth", 1727078400.0, [
        "How do I store drawn comb over winter so the wax moth does not destroy it?",
        "Wax moth larvae go for comb that has held brood, because they live on the cocoons and pollen in it; "
        "pale comb from honey supers is much less attractive. Store supers in a cold, light, airy place, since "
        "moths do not develop below about 10 °C. Freezing the frames at -12 °C for two days kills all stages, "
        "after which you can stack them tightly sealed. Some beekeepers also cross-stack boxes so light and air "
        "pass through, which the moths dislike.",
    ], "gpt-4o-mini"))

    key = "lions-mane"
    tree = [
        (node(key, "system", "system", text_content(""), metadata=HIDDEN), None),
        (node(key, "q1", "user", text_content(
            "What is a good sawdust recipe for lion's mane blocks?")), "system"),
        (node(key, "a1", "assistant", text_content(
            "A common and reliable recipe is hardwood sawdust with 20 percent wheat bran by dry weight, hydrated "
            "to about 60 percent moisture. Oak, beech or maple sawdust all work; avoid conifer sawdust. The "
            "squeeze test tells you when moisture is right: a handful should hold together and release only a "
            "drop or two of water. Fill filter-patch bags with 2 to 2.5 kg and sterilise them for two and a half "
            "hours at 15 psi."), model="gpt-4o"), "q1"),
        (node(key, "q2", "user", text_content("When do I cut the bag open?")), "a1"),
        (node(key, "a2-old", "assistant", text_content("When it is fully colonised."), model="gpt-4o"), "q2"),
        (node(key, "a2", "assistant", text_content(
            "Lion's mane is unusual: it often starts forming primordia inside the bag before the block looks "
            "fully white, so watch for small dense bumps pressing against the plastic. Cut a small X, about 3 cm, "
            "right where they appear, and move the block to high humidity, 85 to 95 percent, with plenty of fresh "
            "air. Too little fresh air gives long, coral-like spines; too little humidity turns the tips yellow "
            "and brown. Harvest when the spines are about a centimetre long, before they yellow."),
            model="gpt-4o"), "q2"),
    ]
    conversations.append(chatgpt_conversation(key, "Lion's mane on sawdust blocks", 1729249200.0, tree, None,
                                              "gpt-4o"))

    conversations.append(linear("brooks", "Reviving a dried-out Brooks saddle", 1731409200.0, [
        "I found a Brooks B17 in a barn, the leather is dry and grey. Is it salvageable?",
        "Usually yes, as long as the leather has no deep cracks and the top has not torn at the rivets. Clean it "
        "with a barely damp cloth and a little saddle soap, let it dry slowly away from heat, then work in a thin "
        "coat of Proofide or a similar leather dressing on the top and a bit more on the underside. Repeat after "
        "a day if the leather still drinks it up. Do not soak it in oil: an over-soaked saddle goes soft and sags, "
        "and a sagging saddle cannot be saved by tensioning alone.",
    ], "gpt-4o"))
    return conversations


# (conversation key, node name, rating): a thumbs up on a reply that was kept over a regenerated one, a thumbs
# down on a regenerated-away reply, and a thumbs up on a reply with no alternative (no pair can come of it).
FEEDBACK = [("demaree", "a1", "thumbsUp"), ("lions-mane", "a2-old", "thumbsDown"), ("brooks", "turn-1", "thumbsUp")]
# What the formatter must mine from the ChatGPT export above, by kind, and what it must leave out, by reason: the two
# regenerations are rated (so their kind is "rating"), the typo edit of "cold-set" pairs, the rewritten question of
# "oyster-straw" does not (a new question, not a judgement of the old reply).
PREFERENCE_TRUTH = {"mined": {"rating": 2, "edit": 1}, "dropped": {"edit_prompt_changed": 1},
                    "ratings": 3, "ratings_without_alternative": 1}


def message_feedback() -> list[dict]:
    return [{"id": uid("feedback", key, name), "conversation_id": uid(key), "user_id": "user-sample",
             "message_id": uid(key, name), "rating": rating, "create_time": 1733000000.0 + i, "workspace_id": None,
             "content": "{}", "storage_protected": False} for i, (key, name, rating) in enumerate(FEEDBACK)]


# --------------------------------------------------------------------------- Claude

def claude_message(key: str, name: str, sender: str, created: float, blocks: list[dict] | None,
                   text: str | None = None, parent: str | None = None) -> dict:
    """One chat message; ``blocks`` None writes an old-style message with only flat ``text``."""
    message = {"uuid": uid(key, name), "text": text or "", "sender": sender, "created_at": iso(created),
               "updated_at": iso(created), "attachments": [], "files": []}
    if blocks is not None:
        stamped = [{"start_timestamp": iso(created), "stop_timestamp": iso(created + 2), **b} for b in blocks]
        message["content"] = stamped
        if text is None:  # the flat text the service writes: a placeholder where a tool block was
            message["text"] = "\n\n".join(b["text"] if b["type"] == "text" else UNSUPPORTED_BLOCK
                                          for b in blocks if b["type"] != "thinking")
    if parent is not None:
        message["parent_message_uuid"] = CLAUDE_ROOT if parent == "root" else uid(key, parent)
    return message


def said(text: str) -> dict:
    return {"type": "text", "text": text, "citations": []}


def claude_conversation(key: str, name: str, start: float, turns: list[list[dict] | str],
                        thinking: dict[int, str] | None = None) -> dict:
    """A linear conversation; ``turns`` alternate human/assistant, a str is an old-style text-only message."""
    messages = []
    for i, turn in enumerate(turns):
        sender = "human" if i % 2 == 0 else "assistant"
        created = start + 63.0 * i
        if isinstance(turn, str):
            messages.append(claude_message(key, f"m{i}", sender, created, None, text=turn))
            continue
        blocks = list(turn)
        if thinking and i in thinking:
            blocks.insert(0, {"type": "thinking", "thinking": thinking[i], "summaries": [], "cut_off": False})
        messages.append(claude_message(key, f"m{i}", sender, created, blocks))
    return {"uuid": uid(key), "name": name, "summary": "", "created_at": iso(start),
            "updated_at": iso(start + 63.0 * len(turns)), "account": {"uuid": uid("account")},
            "chat_messages": messages}


def claude_export() -> list[dict]:
    conversations = [claude_conversation("crush-strain", "Extracting honey without an extractor", 1723366800.0, [
        [said("I only have two hives and no extractor. What is the simplest way to get the honey out of the "
              "frames?")],
        [said("Crush and strain is the simplest method and needs almost no equipment. Cut the comb off the "
              "frames into a food-grade bucket, break it up thoroughly with a potato masher or a clean paint "
              "paddle, and pour it into a strainer or a nylon mesh bag over a second bucket. Leave it in a warm "
              "room, around 25 to 30 °C, for a day or two and the honey drains through on its own. The downside "
              "is that the bees must rebuild the comb, which costs them a lot of nectar, so it suits small "
              "apiaries like yours rather than large ones.")],
        [said("What do I do with the crushed wax afterwards?")],
        [said("Melt it down: put the wax in a pot with water, heat it gently until it melts, then let it cool "
              "slowly. The clean wax floats and sets as a disc, while honey and debris sink into the water or "
              "stick to the underside, where you can scrape them off. Never heat wax directly over a flame, as "
              "it is flammable; a water bath or a solar wax melter is safer. Two hives give you enough wax for "
              "a few candles or a tin of wood polish each year.")],
    ], thinking={1: "The user has two hives and no extractor; crush and strain is the obvious answer. Mention the "
                    "cost of rebuilding comb."})]

    key = "shiitake-logs"
    search = {"type": "tool_use", "name": "web_search",
              "input": {"query": "shiitake log inoculation timing after felling"}, "message": "Searching the web",
              "integration_name": None, "display_content": None}
    results = {"type": "tool_result", "name": "web_search", "is_error": False, "message": None,
               "content": [{"type": "knowledge", "title": "Growing shiitake on logs",
                            "url": "https://example.org/shiitake-logs",
                            "text": "Inoculate within two to six weeks of felling, while the wood is still moist."}]}
    conversations.append(claude_conversation(key, "Shiitake logs: when to inoculate", 1709982000.0, [
        [said("We are felling some oaks in February. How soon after cutting should I inoculate logs with "
              "shiitake spawn?")],
        [said("Let me check the usual guidance on timing."), search, results,
         said("Inoculate between about two and six weeks after felling. Waiting a couple of weeks lets the "
              "tree's own defences in the living cells die back, but if you wait much longer the logs dry out "
              "and other fungi move in first. Cut logs 10 to 20 cm thick and about a metre long, keep the bark "
              "undamaged, and store them off the ground in the shade until you drill.")],
        [said("How many holes per log, and do I need to wax them?")],
        [said("A common pattern is rows of holes 15 cm apart along the log, with the rows 5 cm apart and "
              "offset like a diamond, which comes to about 40 to 50 holes on a one-metre log of 15 cm diameter. "
              "Yes, seal each plug with melted wax, and the cut ends too. The wax keeps the spawn from drying "
              "out and keeps competitors out during the six to eighteen months the mycelium needs to run "
              "through the wood.")],
    ]))

    key = "bottom-bracket"
    start = 1712397600.0
    messages = [
        claude_message(key, "h1", "human", start, [said(
            "I am overhauling a cup-and-cone bottom bracket on a 1970s Peugeot. The fixed cup will not budge. "
            "Which way does it unscrew?")], parent="root"),
        claude_message(key, "a1", "assistant", start + 40, [said(
            "Peugeots of that era almost always have French threading, and that matters: on a French bottom "
            "bracket both cups are right-hand threaded, so the fixed cup on the drive side unscrews "
            "anticlockwise like an ordinary bolt. On an English (BSA) bracket the fixed cup is left-hand "
            "threaded and unscrews clockwise. Check for markings on the cup, such as '35 x 1' for French "
            "versus '1.37 x 24' for English, before you put real force on it.")], parent="h1"),
        claude_message(key, "h2-first", "human", start + 300, [said("what tool")], parent="a1"),
        claude_message(key, "a2-first", "assistant", start + 320, [said("A fixed-cup spanner.")],
                       parent="h2-first"),
        claude_message(key, "h2", "human", start + 360, [said(
            "It says 35 x 1, so French. What tool do I need to get that much torque on the fixed cup?")],
            parent="a1"),
        claude_message(key, "a2", "assistant", start + 400, [said(
            "A thin fixed-cup spanner that fits the flats on the cup, held in place with a bolt and washer "
            "through the bottom bracket shell, so it cannot slip off and round the flats. Put the frame in a "
            "solid stand or the spanner in a bench vice and turn the frame rather than the tool. A few drops "
            "of penetrating oil the night before and a little heat from a hair dryer help with a cup that has "
            "been in place for fifty years.")], parent="h2"),
        claude_message(key, "h3", "human", start + 900, [said(
            "Got it out. How tight should the adjustable cup be when I reassemble?")], parent="a2"),
        claude_message(key, "a3", "assistant", start + 940, [
            {"type": "thinking", "thinking": "Classic cup-and-cone adjustment: no play, no binding; lockring.",
             "summaries": [], "cut_off": False},
            said("Tighten the adjustable cup by hand until all play is gone and the axle still turns smoothly "
                 "with no notchy feeling, then back it off a tiny amount. Hold the cup with a pin spanner while "
                 "you tighten the lockring firmly, because the lockring tends to drag the cup tighter. Then "
                 "check again: you should feel no knock when you rock the crank arm, and the spindle should "
                 "turn freely. It often takes two or three tries to get it right.")], parent="h3"),
    ]
    conversations.append({"uuid": uid(key), "name": "French-thread bottom bracket overhaul",
                          "summary": "", "created_at": iso(start), "updated_at": iso(start + 940),
                          "account": {"uuid": uid("account")}, "chat_messages": messages})

    conversations.append(claude_conversation("propolis", "Why bees collect propolis", 1721815200.0, [
        "My bees glue everything together with brown resin. Why do they collect so much of it?",
        "That resin is propolis, which the bees gather from tree buds and wounds, mostly poplar, birch and "
        "conifers. They use it to seal cracks, narrow the entrance before winter and coat the inside of the "
        "hive, where its antimicrobial compounds work as a kind of colony-level immune system. Some strains of "
        "bees collect far more than others, so a heavy propoliser is not a sign that anything is wrong. Many "
        "beekeepers put a propolis trap under the crown board to harvest it.",
    ]))

    conversations.append(claude_conversation("tyres-27", "27-inch vs 700c tyres for an old road bike",
                                             1726146000.0, [
        [said("My 1976 road bike has 27-inch wheels. Can I just put 700c tyres on the same rims?")],
        [said("No: the names sound close, but the rims are different sizes. A 27-inch rim has a bead seat "
              "diameter of 630 mm, a 700c rim 622 mm, so a 700c tyre is too small to fit a 27-inch rim. You "
              "can either keep the 27-inch rims, for which good tyres are still made in widths around 28 to "
              "32 mm, or switch to 700c wheels, in which case the brake pads must reach 4 mm further down.")],
        [said("Will my old centre-pull brakes reach that far?")],
        [said("Often they will, because many long-reach centre-pull brakes of that period have slots with a "
              "few millimetres of adjustment left. Move the pads to the bottom of the slots and check that "
              "they hit the middle of the braking surface, not the tyre and not below the rim. If they fall "
              "short, long-reach dual-pivot calipers are the usual upgrade, but check them on the bike before "
              "committing to new wheels.")],
    ]))
    return conversations


# --------------------------------------------------------------------------- hand-made formats

def custom_conversations() -> dict:
    return {"conversations": [
        {"id": "conv_hive_scale", "title": "Hive scale in winter", "messages": [
            {"author": "user", "timestamp": 1736935200,
             "content": "My hive scale shows the colony losing about 80 g a day in January. Is that normal?"},
            {"author": "assistant", "timestamp": 1736935260,
             "content": "Yes, that is in the normal range for a healthy colony in midwinter, roughly 50 to 100 g "
                        "a day depending on colony size and temperature. Consumption rises steeply from late "
                        "February once the queen starts laying and the bees heat the brood nest to 35 °C. Use "
                        "the scale to extrapolate: if the hive would fall below about 5 kg of stores before "
                        "mid-April at the current rate, give fondant."},
            {"author": "user", "timestamp": 1736935500,
             "content": "How do I know how much of the weight is actually honey?"},
            {"author": "assistant", "timestamp": 1736935560,
             "content": "Weigh the empty equipment once, boxes, frames, floor and roof, and subtract it together "
                        "with an estimate for bees and comb, about 3 to 4 kg for a winter colony. What remains is "
                        "roughly the stores. The absolute number is less important than the trend, so write down "
                        "the weight after every feed and compare week by week."},
        ]},
        {"id": "conv_reishi", "title": "Reishi double extraction", "messages": [
            {"author": "human", "timestamp": "2025-02-08T19:30:00Z",
             "content": "I grew reishi this summer. How do I make a double extract from the dried slices?"},
            {"author": "ai", "timestamp": "2025-02-08T19:30:40Z",
             "content": "A double extract combines a hot-water and an alcohol extraction, because the "
                        "polysaccharides dissolve in water and the triterpenes in alcohol. Soak the thinly "
                        "sliced, dried reishi in 40 percent or stronger alcohol for four to six weeks, then "
                        "strain it and simmer the same slices in water for two to three hours, reducing the "
                        "liquid by about half. Mix the two extracts so the final alcohol content stays above "
                        "about 20 percent, which keeps it from spoiling."},
            {"author": "human", "timestamp": "2025-02-08T19:35:00Z",
             "content": "Does the reishi need to be powdered first?"},
            {"author": "ai", "timestamp": "2025-02-08T19:35:30Z",
             "content": "It helps, but reishi is woody enough to destroy a kitchen blender. Slice it thinly while "
                        "it is still fresh, or break dried pieces in a strong grain mill. The finer the "
                        "material, the more the solvent can reach, so thin slices or coarse powder give a "
                        "noticeably stronger extract than chunks."},
        ]},
        {"id": "conv_chain_wear", "title": "Measuring chain wear", "messages": [
            {"author": "user", "timestamp": 1739613600,
             "content": "How do I know when to replace the chain on my old five-speed?"},
            {"author": "assistant", "timestamp": 1739613645,
             "content": "Measure it with a steel ruler: twelve full links of a new chain measure exactly 12 "
                        "inches, pin to pin. Replace the chain when it reaches 12 1/16 inch, about 0.5 percent "
                        "elongation; at 12 1/8 inch the sprockets are probably worn too and will skip with a "
                        "new chain. Old freewheels are getting hard to find, so changing chains early is the "
                        "cheapest way to keep yours."},
        ]},
    ]}


def chat_jsonl() -> list[dict]:
    system = {"role": "system", "content": "You are a helpful assistant for a small-scale beekeeper, mushroom "
                                           "grower and bicycle mechanic."}
    return [
        {"messages": [system,
                      {"role": "user", "content": "Which plants give my bees pollen in early March?"},
                      {"role": "assistant", "content": "Hazel, willow (especially goat willow), crocus, snowdrops "
                                                       "and winter heather are the main early pollen sources in "
                                                       "central Europe. Willow matters most: one large tree can "
                                                       "supply a whole apiary for two weeks. Plant them within "
                                                       "a few hundred metres of the hives, because on cold "
                                                       "spring days bees do not fly far."}]},
        {"messages": [system,
                      {"role": "user", "content": "Can I cultivate morels in my garden?"},
                      {"role": "assistant", "content": "Outdoor morel beds can work, but results are unreliable. "
                                                       "Commercial growers in China use spawn spread on tilled "
                                                       "soil in autumn with nutrient bags laid on top; at home "
                                                       "you can try a bed of hardwood chips and ashes seeded "
                                                       "with spawn. Expect nothing the first year and treat any "
                                                       "harvest as a bonus."},
                      {"role": "user", "content": "Why are the nutrient bags needed?"},
                      {"role": "assistant", "content": "The mycelium stores energy in sclerotia before it fruits, "
                                                       "and the bags of sterilised grain feed it while the soil "
                                                       "alone would not. Without that extra food, morel mycelium "
                                                       "tends to colonise the bed and never form mushrooms."}]},
        {"messages": [system,
                      {"role": "user", "content": "My rear wheel wobbles about 3 mm side to side. Can I true it "
                                                  "myself?"},
                      {"role": "assistant", "content": "Yes, 3 mm is easy to fix with a spoke key. Spin the wheel "
                                                       "and mark where the rim comes closest to one brake pad. "
                                                       "At that spot, tighten the spoke that goes to the opposite "
                                                       "side of the hub by a quarter turn and loosen its "
                                                       "neighbours that go to the near side by a quarter turn. "
                                                       "Work in small steps and check often."}]},
        {"messages": [system,
                      {"role": "user", "content": "The drum brake on my old Dutch bike barely stops. What can I "
                                                  "adjust?"},
                      {"role": "assistant", "content": "First take up the cable slack with the barrel adjuster at "
                                                       "the brake arm so the lever stops a finger's width from "
                                                       "the grip. If it still brakes weakly, the shoes are "
                                                       "probably glazed or contaminated with grease from the "
                                                       "hub bearings. Taking the wheel out, cleaning the drum "
                                                       "and roughening the shoes with sandpaper often restores "
                                                       "most of the braking."}]},
        {"messages": [{"role": "user", "content": "Can I make mead from the honey I wash out of the cappings?"},
                      {"role": "assistant", "content": "Yes, that is a traditional use for cappings water. Measure "
                                                       "its sugar content with a hydrometer and adjust with more "
                                                       "honey or water to a starting gravity of about 1.090 to "
                                                       "1.110 for a medium mead. Strain out the wax, add a wine "
                                                       "yeast and yeast nutrient, and ferment at 16 to 20 °C."},
                      {"role": "user", "content": "How long before I can drink it?"},
                      {"role": "assistant", "content": "Fermentation usually finishes within three to six weeks, "
                                                       "but young mead tastes harsh. Rack it off the sediment, "
                                                       "let it clear for a few months and bottle it; most meads "
                                                       "improve a lot after six months to a year."}]},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(Path(__file__).resolve().parent),
                        help="folder for the five files (default: samples/)")
    out = Path(parser.parse_args(argv).out_dir)
    # The services write their exports as one long line; so do we.
    atomic.write_json(out / "conversations.json", chatgpt_export(), indent=None)
    atomic.write_json(out / "message_feedback.json", message_feedback(), indent=None)
    atomic.write_json(out / "conversations2.json", claude_export(), indent=None)
    atomic.write_json(out / "custom_conversations.json", custom_conversations())
    atomic.write_jsonl(out / "chat.jsonl", chat_jsonl())
    for name in ("conversations.json", "message_feedback.json", "conversations2.json", "custom_conversations.json",
                 "chat.jsonl"):
        print(f"wrote {out / name} ({(out / name).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""write_reply numbers a bundle's replies by looking up its own names, never by listing the folder."""

from __future__ import annotations

from pathlib import Path

from connectors._folder_common import exclusive_write, write_reply


class Folder:
    """A replies folder on disk that counts the names looked up (and has no way to be listed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.lookups = 0

    def exists(self, name: str) -> bool:
        self.lookups += 1
        return (self.path / name).exists()

    def reply(self, bundle: str, reply_id: str, code: str | None = "1-2") -> list[str]:
        return write_reply(
            bundle, code, b"<ARActe/>" if code else None, {"state": "ACKNOWLEDGED", "reply_id": reply_id}, None,
            exists=self.exists,
            put_new=lambda name, data: exclusive_write(self.path / name, data),
            remove=lambda name: (self.path / name).unlink(missing_ok=True),
            read=lambda name: (self.path / name).read_bytes(),
        )


def test_replies_take_the_next_numbers(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "replies")
    assert folder.reply("DEL_1.json", "a")[-1] == "DEL_1.1.json"
    assert folder.reply("DEL_1.json", "b")[-1] == "DEL_1.2.json"
    assert folder.reply("DEL_2.json", "a")[-1] == "DEL_2.1.json"
    assert folder.reply("DEL_1.json", "c", code=None) == ["DEL_1.3.json"]
    assert not [p for p in folder.path.iterdir() if p.name.endswith(".claim")]


def test_a_crowded_folder_costs_a_reply_no_more_lookups(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "replies")
    for n in range(2000):  # other bundles' replies: a folder nobody cleans
        (folder.path / f"OTHER_{n:05d}.1.json").write_text("{}")
    folder.reply("DEL_1.json", "a")
    first = folder.lookups
    folder.lookups = 0
    folder.reply("DEL_1.json", "b")
    assert first < 20 and folder.lookups < 30  # its own names only, whatever the folder holds


def test_a_number_a_power_cut_left_half_written_is_not_reused(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "replies")
    folder.reply("DEL_1.json", "a")
    folder.reply("DEL_1.json", "b")
    # a power cut took reply 2's summary (its folder not synced yet), not its message
    (folder.path / "DEL_1.2.json").unlink()
    assert folder.reply("DEL_1.json", "c")[-1] == "DEL_1.3.json"  # 2's message stays as it is
    folder.reply("DEL_1.json", "d")
    for name in ("DEL_1.4.json", "DEL_1.4.1-2.xml"):  # number 4 lost whole
        (folder.path / name).unlink()
    assert folder.reply("DEL_1.json", "e")[-1] == "DEL_1.4.json"
    assert folder.reply("DEL_1.json", "e") == []  # asked again: found, not written twice


def test_a_leftover_file_of_the_same_name_moves_the_reply_to_the_next_number(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "replies")
    (folder.path / "DEL_1.1.1-2.xml").write_bytes(b"<old/>")  # a reply cut short, its claim lost
    written = folder.reply("DEL_1.json", "a")
    assert written == ["DEL_1.2.1-2.xml", "DEL_1.2.json"]
    assert (folder.path / "DEL_1.1.1-2.xml").read_bytes() == b"<old/>"  # never overwritten


def test_an_earlier_reply_beyond_a_few_free_numbers_is_looked_for(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "replies")
    for reply_id in "abcde":
        folder.reply("DEL_1.json", reply_id)
    for n in (2, 3):  # two numbers in a row lost: still within the look-past
        for name in (f"DEL_1.{n}.json", f"DEL_1.{n}.1-2.xml"):
            (folder.path / name).unlink()
    assert folder.reply("DEL_1.json", "e") == []

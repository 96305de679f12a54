"""The video plugin (plugins/video.py): a modality added through `register_backends` and
`register_tools` only. Keyframes and the audio track come out of ffmpeg and reach the OCR,
captioner, VLM and ASR through the graph kit's converter step (`Tool.expands`), no graph edited.

`python tests/test_video_plugin.py` rebuilds examples/media/clip.mp4 (a scene picture and a
sentence spoken by the offline Piper voice; needs the prepared models in $MMAGENT_HOME).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from mmagent.errors import BackendError, InputError

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "examples" / "media" / "clip.mp4"
#: What the example clip says and shows.
SENTENCE = "The meeting moves to Friday at ten."
WORD = "OPEN"
QUESTION = "What is said and what is shown?"

needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="ffmpeg is not installed")


# -- making clips ----------------------------------------------------------------------------------


def scene_picture(objects, size: int = 128, word: str | None = None):
    """A scene-world picture (mmagent.scenes) with the given (kind, colour, x, y) objects, in
    fractions of the side."""
    from mmagent.scenes import render
    from mmagent.scenes.generate import word_band
    from mmagent.scenes.model import Scene, SceneObject
    from mmagent.scenes.vocab import SIZES

    r = round(SIZES["large"] * size)
    shapes = [SceneObject(kind, colour, "large", round(x * size), round(y * size), r) for kind, colour, x, y in objects]
    return render(Scene(seed="video", index=0, size=size, background=(240, 240, 240), objects=shapes, word=word,
                        word_band=word_band(size) if word else None))


def tone_wav(seconds: float, rate: int = 22050) -> bytes:
    """A 440 Hz tone, 16-bit mono WAV."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def make_clip(path: Path, pictures, seconds_each: float, audio: bytes | None = None) -> Path:
    """An mp4: each picture (PIL images) shown for `seconds_each`, with `audio` (WAV bytes) as its
    sound track, or none. H.264 + AAC when ffmpeg has libx264, else MPEG-4 part 2; bit-exact, no
    metadata, so the same inputs make the same file."""
    folder = path.parent / f".{path.stem}-parts"
    folder.mkdir(parents=True, exist_ok=True)
    args: list[str] = []
    for i, picture in enumerate(pictures):
        picture.save(folder / f"{i}.png")
        args += ["-loop", "1", "-framerate", "10", "-t", f"{seconds_each}", "-i", str(folder / f"{i}.png")]
    if audio is not None:
        (folder / "audio.wav").write_bytes(audio)
        args += ["-i", str(folder / "audio.wav")]
    n = len(pictures)
    graph = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0,format=yuv420p[v]"
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    video = ["-c:v", "libx264", "-preset", "veryslow", "-tune", "stillimage"] if " libx264 " in encoders \
        else ["-c:v", "mpeg4", "-q:v", "3"]
    sound = ["-map", f"{n}:a", "-c:a", "aac", "-b:a", "48k", "-ac", "1"] if audio is not None else []
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, "-filter_complex", graph, "-map", "[v]",
                    *sound, *video, "-r", "10", "-t", f"{n * seconds_each}", "-threads", "1",
                    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
                    "-movflags", "+faststart", str(path)], check=True, capture_output=True)
    shutil.rmtree(folder)
    return path


def make_example_clip(path: Path = CLIP) -> Path:
    """examples/media/clip.mp4: a red circle and a blue square above the sign OPEN, while the
    offline Piper voice says SENTENCE (the picture lasts as long as the speech, plus half a second).
    Piper's noise is off, so the same voice and ffmpeg make the same file."""
    from mmagent.backends import get_backend

    speech = get_backend("tts", "piper", noise_scale=0.0, noise_w_scale=0.0).synthesize(SENTENCE)
    picture = scene_picture([("circle", "red", 0.3, 0.35), ("square", "blue", 0.7, 0.35)], size=256, word=WORD)
    return make_clip(path, [picture], round(speech.duration + 0.5, 1), speech.read_bytes())


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """two: a red then a green scene, 1 s each, with a 2 s tone; still: one picture, 3 s, with a
    tone; silent: two pictures, no sound."""
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("clips")
    red = scene_picture([("circle", "red", 0.5, 0.5)])
    green = scene_picture([("square", "green", 0.3, 0.3), ("triangle", "yellow", 0.7, 0.7)])
    return {
        "two": make_clip(folder / "two.mp4", [red, green], 1.0, tone_wav(2.0)),
        "still": make_clip(folder / "still.mp4", [red], 3.0, tone_wav(3.0)),
        "silent": make_clip(folder / "silent.mp4", [red, green], 1.0),
    }


def load(path: Path):
    from mmagent.content import load_media

    return load_media(path, expect="video")


def backend(**options):
    from mmagent.plugins.video import FfmpegVideo

    return FfmpegVideo(**options)


# -- (a) registered through the hooks --------------------------------------------------------------


def test_the_plugin_registers_a_backend_and_a_converter_tool_through_the_hooks():
    from click.testing import CliRunner

    from mmagent.backends import get_registry
    from mmagent.cli import build_cli
    from mmagent.plugin_manager import get_plugins
    from mmagent.plugins.video import FfmpegVideo
    from mmagent.runtime import BUILTIN_PLUGINS
    from mmagent.tools import get_tools

    assert "mmagent.plugins.video" in BUILTIN_PLUGINS
    entry = get_registry().entries[("video", "ffmpeg")]
    assert entry.cls is FfmpegVideo and entry.plugin == "video"
    tool = get_tools().get("split_video")
    assert (tool.role, tool.file_kind, tool.expands, tool.artifact, tool.intents, tool.auto) == (
        "video", "video", ("image", "audio"), "video", (), False)
    assert get_tools().owners["split_video"] == "video"
    info = get_plugins().infos["video"]
    assert info.status == "ok" and {"video/ffmpeg", "tool split_video"} <= set(info.provides)

    cli = build_cli()
    [row] = json.loads(CliRunner().invoke(cli, ["backends", "--role", "video", "--json"]).output)
    assert (row["name"], row["accepts"], row["produces"]) == ("ffmpeg", ["video"], ["image", "audio"])
    assert row["ready"] is bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
    tools = json.loads(CliRunner().invoke(cli, ["tools", "--json"]).output)
    assert next(t for t in tools if t["name"] == "split_video")["reads"] == "video"


def test_importing_the_plugin_loads_nothing_heavy():
    code = ("import sys, mmagent.plugins.video; "
            "print(sorted(m for m in ('torch', 'PIL', 'numpy', 'langgraph') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# -- (b) splitting ---------------------------------------------------------------------------------


def test_keyframes_are_pngs_of_the_videos_size_and_the_audio_a_16k_wav(clips):
    video = load(clips["two"])
    frames, audio, info = backend().split(video)
    assert info["sampled"] == 4 and info["times"] == [0.0, 1.0]  # 0.0, 0.5 | 1.0, 1.5: two pictures
    assert [f.mime_type for f in frames] == ["image/png"] * 2
    assert all((f.width, f.height) == (video.width, video.height) == (128, 128) for f in frames)
    assert frames[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert frames[0].extras == {"video": video.ref.uri, "time": 0.0} and frames[1].extras["time"] == 1.0

    from PIL import Image

    first = Image.open(frames[0].path()).convert("RGB").getpixel((64, 64))
    second = Image.open(frames[1].path()).convert("RGB").getpixel((38, 38))
    assert max(abs(a - b) for a, b in zip(first, (220, 40, 40))) < 30  # the red circle
    assert max(abs(a - b) for a, b in zip(second, (40, 170, 60))) < 30  # the green square

    assert audio.mime_type == "audio/wav" and (audio.sample_rate, audio.channels) == (16000, 1)
    assert abs(audio.duration - 2.0) <= 0.2 and info["audio"] == round(audio.duration, 3)
    assert audio.extras == {"video": video.ref.uri}


def test_a_still_clip_gives_one_keyframe_and_a_silent_clip_no_audio(clips):
    frames, audio, info = backend().split(load(clips["still"]), frames=6)
    assert len(frames) == 1 and info["sampled"] == 6 and abs(audio.duration - 3.0) <= 0.2
    frames, audio, info = backend(frames=2).split(load(clips["silent"]))
    assert len(frames) == 2 and audio is None and info["audio"] is None


def test_the_tool_says_what_it_made(clips):
    from mmagent.tools import call_tool

    out = call_tool("split_video", {"file": str(clips["two"]), "frames": 4})
    assert out.text == "2 keyframes at 0.0, 1.0 s; audio track 2.0 s"
    assert [p.type for p in out.parts] == ["image", "image", "audio"]
    assert out.artifact["kind"] == "video" and out.artifact["duration"] == pytest.approx(2.0, abs=0.1)
    assert [k["time"] for k in out.artifact["keyframes"]] == [0.0, 1.0]
    assert out.artifact["audio"]["file"] == out.parts[2].ref.uri
    assert call_tool("split_video", {"file": str(clips["still"])}).text.startswith(
        "1 keyframe at 0.0 s (the picture does not change); audio track 3.0 s")
    assert call_tool("split_video", {"file": str(clips["silent"]), "frames": 1}).text == \
        "1 keyframe at 0.0 s; no audio track"


def test_the_frames_option_is_checked(clips):
    from mmagent.tools import ToolError, call_tool

    video = load(clips["two"])
    for bad in (0, 65, True, "many", 2.5):
        with pytest.raises(InputError, match="frames must be a whole number from 1 to 64"):
            backend().split(video, frames=bad)
    with pytest.raises(ToolError, match="argument 'frames' must be a integer"):
        call_tool("split_video", {"file": str(clips["two"]), "frames": "x"})
    assert len(backend(frames="1").split(video)[0]) == 1  # from the environment: a string


# -- (c) through the graphs, with scripted backends ------------------------------------------------


def step_names(result) -> list[str]:
    """The tool of each step (a chat model's step names only its role)."""
    return [s.get("name", s["tool"]) for s in result.steps]


def _recording_asr(text: str):
    from mmagent.testing import ScriptedASR

    class RecordingASR(ScriptedASR):
        def transcribe(self, audio, *, language=None):
            self.heard.append(audio)
            return super().transcribe(audio, language=language)

    asr = RecordingASR(text)
    asr.heard = []
    return asr


def test_the_tool_chain_answers_from_the_transcript_of_the_track_and_what_the_keyframes_show(clips):
    from mmagent.runner import run
    from mmagent.testing import ScriptedCaptioner, ScriptedLLM, ScriptedOCR, scripted_toolbox

    asr, llm = _recording_asr(SENTENCE), ScriptedLLM("Friday at ten; a red circle.")
    box = scripted_toolbox(video=backend(), asr=asr, ocr=ScriptedOCR([WORD]), llm=llm,
                           caption=ScriptedCaptioner("a red circle and a blue square"))
    result = run(QUESTION, attachments=[clips["two"]], pipeline="tools", toolbox=box, planner="rules", output="text")
    assert result.answer == "Friday at ten; a red circle."
    names = step_names(result)
    assert names[0] == "split_video" and names.count("transcribe") == 1 and names[-1] == "llm"
    assert names.count("read_text") == names.count("caption_image") == 2  # one per keyframe
    assert result.steps[0]["backend"] == "ffmpeg" and result.steps[0]["file"] == "video 1"
    assert result.plan["tools"] == ["read_text", "caption_image"]

    by_label = {a["label"]: a for a in result.artifacts}
    assert by_label["keyframes and audio track of video 1"]["text"] == "2 keyframes at 0.0, 1.0 s; audio track 2.0 s"
    assert by_label["transcript of audio 1"]["text"] == SENTENCE
    assert {"caption of image 1", "caption of image 2", "text read from image 1"} <= set(by_label)
    [heard] = asr.heard
    assert heard.sample_rate == 16000 and heard.ref.uri == by_label["keyframes and audio track of video 1"]["audio"]["file"]

    prompt = llm.calls[0]["messages"][-1].text
    for seen in (SENTENCE, "a red circle and a blue square", WORD, "2 keyframes at 0.0, 1.0 s", QUESTION):
        assert seen in prompt


def test_the_adapter_route_gives_the_vlm_the_keyframes(clips):
    from mmagent.runner import run
    from mmagent.testing import ScriptedVLM, scripted_toolbox

    vlm = ScriptedVLM("A red circle; the meeting moves to Friday.")
    box = scripted_toolbox(video=backend(), asr=_recording_asr(SENTENCE), vlm=vlm)
    result = run(QUESTION, attachments=[clips["two"]], pipeline="adapter", toolbox=box, output="text")
    assert step_names(result) == ["split_video", "transcribe", "vlm"]
    assert result.plan["images"] == 2
    content = vlm.calls[0]["messages"][-1].content
    assert [p.type for p in content] == ["image", "image", "text"]
    assert [p.extras["time"] for p in content[:2]] == [0.0, 1.0]
    assert f"[transcript of audio 1] {SENTENCE}" in content[-1].text and content[-1].text.endswith(QUESTION)


def test_the_default_route_expands_the_video_once_before_choosing(clips):
    from mmagent.runner import run
    from mmagent.testing import ScriptedCaptioner, ScriptedLLM, ScriptedOCR, scripted_toolbox

    box = scripted_toolbox(video=backend(), asr=_recording_asr(SENTENCE), ocr=ScriptedOCR([WORD]),
                           caption=ScriptedCaptioner("shapes"), llm=ScriptedLLM("ok"))
    result = run(QUESTION, attachments=[clips["two"]], toolbox=box, planner="rules", output="text")  # pipeline auto
    assert step_names(result).count("split_video") == 1
    assert "video 1 -> 2 image + 1 audio (converter tool)" in result.to_json()["route"]["downgrades"]
    assert {"transcript of audio 1", "caption of image 2"} <= {a["label"] for a in result.artifacts}


def test_a_follow_up_on_a_thread_reuses_the_split(clips):
    from mmagent.runner import run
    from mmagent.testing import ScriptedCaptioner, ScriptedLLM, scripted_toolbox

    box = scripted_toolbox(video=backend(), asr=_recording_asr(SENTENCE), caption=ScriptedCaptioner("a red circle"),
                           llm=ScriptedLLM("ok"))
    first = run(QUESTION, attachments=[clips["still"]], pipeline="tools", toolbox=box, planner="rules", output="text", thread="v")
    second = run("And what colour is the circle?", pipeline="tools", toolbox=box, planner="rules", output="text", thread="v")
    assert step_names(first)[:2] == ["split_video", "transcribe"]
    assert "split_video" not in step_names(second)
    assert any(a["label"] == "caption of image 1" for a in second.artifacts)


# -- (d) failures are one line ---------------------------------------------------------------------


def test_a_file_that_is_not_a_video_is_refused_in_one_line(tmp_path):
    from click.testing import CliRunner

    from mmagent.cli import build_cli
    from mmagent.tools import call_tool

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n")
    with pytest.raises(InputError) as caught:
        call_tool("split_video", {"file": str(notes)})
    assert "\n" not in str(caught.value) and "not an image, audio or video format" in str(caught.value)
    result = CliRunner().invoke(build_cli(), ["run", "-a", str(notes), QUESTION])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@needs_ffmpeg
def test_a_damaged_video_is_a_one_line_backend_error():
    from mmagent.content import MediaStore, VideoPart, default_store

    store: MediaStore = default_store()
    ref = store.put(b"\x00\x00\x00\x18ftypmp42" + b"garbage " * 200, "video/mp4")
    with pytest.raises(BackendError) as caught:
        backend().split(VideoPart(ref=ref, duration=2.0, width=64, height=64))
    message = str(caught.value)
    assert message.startswith("video/ffmpeg: ") and "\n" not in message and len(message) < 260


def test_missing_ffmpeg_is_one_line_everywhere(clips, monkeypatch):
    from mmagent.runner import run
    from mmagent.testing import ScriptedLLM, scripted_toolbox
    from mmagent.tools import ToolError, call_tool

    video = load(clips["two"])  # loaded (ffprobe checks it) before ffmpeg goes missing
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "ffmpeg" else real_which(name, *a, **k))

    assert backend().unavailable_reason() == "video/ffmpeg needs ffmpeg (install ffmpeg)"
    with pytest.raises(BackendError, match=r"^video/ffmpeg needs ffmpeg \(install ffmpeg\)$"):
        backend().split(video)
    with pytest.raises(ToolError, match=r"^split_video: video/ffmpeg needs ffmpeg \(install ffmpeg\)$"):
        call_tool("split_video", {"file": video.ref.uri})

    # A backend handed to the toolbox is tried: the step records the error, the run still answers.
    result = run(QUESTION, attachments=[clips["two"]], toolbox=scripted_toolbox(video=backend(), llm=ScriptedLLM("?")),
                 planner="rules", output="text")
    assert result.steps[0]["error"] == "split_video: video/ffmpeg needs ffmpeg (install ffmpeg)"
    assert result.answer == "?"

    from click.testing import CliRunner

    from mmagent.cli import build_cli

    [row] = json.loads(CliRunner().invoke(build_cli(), ["backends", "--role", "video", "--json"]).output)
    assert row["ready"] is False and row["status"] == "video/ffmpeg needs ffmpeg (install ffmpeg)"
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    assert backend().unavailable_reason() == "video/ffmpeg needs ffmpeg and ffprobe (install ffmpeg)"


# -- (e) the example clip through the real models ----------------------------------------------------


def test_the_example_clip_is_small_and_what_the_docs_say():
    video_bytes = CLIP.read_bytes()
    assert len(video_bytes) < 300_000
    if shutil.which("ffprobe"):
        video = load(CLIP)
        assert (video.width, video.height) == (256, 256) and 2.0 < video.duration < 6.0


def _mmagent_run(pipeline: str, cwd: Path) -> dict:
    mm = str(Path(sys.executable).with_name("mmagent"))
    proc = subprocess.run([mm, "run", "-a", str(CLIP), QUESTION, "--pipeline", pipeline, "--json", "--output", "text",
                           "--no-log"], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ}, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
@needs_ffmpeg
def test_real_models_hear_the_track_and_see_the_keyframe_tools(offline_home, zoo_model, tmp_path):
    zoo_model("scene-vlm")
    result = _mmagent_run("tools", tmp_path)
    by_kind = {}
    for artifact in result["artifacts"]:
        by_kind.setdefault(artifact["kind"], []).append(artifact)
    assert by_kind["video"][0]["text"].startswith("1 keyframe at 0.0 s (the picture does not change); audio track")
    transcript = by_kind["transcript"][0]["text"].lower()
    assert "friday" in transcript and "meeting" in transcript  # Whisper hears the Piper voice
    assert by_kind["ocr"][0]["text"] == WORD  # PP-OCR reads the sign on the keyframe
    assert "shapes" in by_kind["caption"][0]["text"].lower()  # the scene captioner's generic caption
    assert [s.get("name", s["tool"]) for s in result["steps"]][:2] == ["split_video", "transcribe"]
    # SmolLM2-135M's answer over these observations is weak (it echoes the keyframe line): not asserted.
    assert result["answer"].strip()


@pytest.mark.slow
@needs_ffmpeg
def test_real_models_adapter_route_sees_the_keyframe(offline_home, zoo_model, tmp_path):
    zoo_model("scene-vlm")
    result = _mmagent_run("adapter", tmp_path)
    assert [s.get("name", s["tool"]) for s in result["steps"]][:2] == ["split_video", "transcribe"]
    assert "friday" in next(a["text"] for a in result["artifacts"] if a["kind"] == "transcript").lower()
    assert result["plan"]["images"] == 1
    # answered in two parts: what the track says (Whisper), then what the scene VLM sees in the keyframe
    said, shown = result["answer"].split("\n", 1)
    assert said.startswith("Said:") and "friday" in said.lower()
    assert shown.startswith("Shown:") and "shapes" in shown.lower() and "meeting" not in shown.lower()


@pytest.mark.slow
@needs_ffmpeg
def test_real_models_default_route(offline_home, zoo_model, tmp_path):
    zoo_model("scene-vlm")
    result = _mmagent_run("auto", tmp_path)
    assert [s.get("name", s["tool"]) for s in result["steps"]].count("split_video") == 1
    assert "video 1 -> 1 image + 1 audio (converter tool)" in result["route"]["downgrades"]
    assert "friday" in next(a["text"] for a in result["artifacts"] if a["kind"] == "transcript").lower()
    assert result["answer"].strip()


if __name__ == "__main__":
    print(make_example_clip())

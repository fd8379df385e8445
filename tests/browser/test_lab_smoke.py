"""The harness itself: JupyterLab loads offline, its widget manager and anywidget's front end
render widgets, and messages go both ways between the page and the kernel."""

from __future__ import annotations

import pytest

expect = pytest.importorskip("playwright.sync_api").expect

# A counter the kernel can read back: each click adds one and syncs the value.
COUNTER_ESM = """
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "labtest-counter";
  const draw = () => { button.textContent = `count is ${model.get("value")}`; };
  button.addEventListener("click", () => {
    model.set("value", model.get("value") + 1);
    model.save_changes();
  });
  model.on("change:value", draw);
  draw();
  el.appendChild(button);
}
export default { render };
"""


def test_widgets_render_and_round_trip_to_the_kernel(lab, open_notebook):
    lab.write_notebook("smoke.ipynb", [
        "#md Widgets in a real JupyterLab",
        "import ipywidgets\nslider = ipywidgets.IntSlider(value=3, max=10)\nslider",
        "import anywidget, traitlets\n\n"
        "class Counter(anywidget.AnyWidget):\n"
        f'    _esm = """{COUNTER_ESM}"""\n'
        "    value = traitlets.Int(0).tag(sync=True)\n\n"
        "counter = Counter(value=41)\ncounter",
        "print('counter', counter.value)",
    ])
    nb = open_notebook("smoke.ipynb")
    nb.run_all()
    assert nb.output_text(3) == "counter 41\n"

    # ipywidgets' manager drew the slider; a change made in the kernel reaches the view.
    slider = nb.outputs(1).locator(".widget-slider")
    expect(slider.locator(".widget-readout")).to_have_text("3")
    nb.execute("slider.value = 7")
    expect(slider.locator(".widget-readout")).to_have_text("7")

    # anywidget's front end ran the ESM; a click in the page reaches the kernel.
    button = nb.outputs(2).locator("button.labtest-counter")
    expect(button).to_have_text("count is 41")
    button.click()
    expect(button).to_have_text("count is 42")
    nb.run_cell(3)
    assert nb.output_text(3) == "counter 42\n"

    assert nb.external_requests == []
    assert nb.page_errors == []

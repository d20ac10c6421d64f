// The test pack's frontend extension: loaded by the real frontend through
// the gateway from the GPU backend that has the pack. It marks the page,
// so the browser test can tell that it ran.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "comfyume.test_pack",
  async setup() {
    document.documentElement.dataset.comfyumeTestPack = "loaded";
  },
});

"""--method tests.helpers.scene_method_previous: the known scene, read with the previous frame
(see scene_method.PreviousFrameScene)."""
from tests.helpers.scene_method import PreviousFrameScene

METHOD = PreviousFrameScene

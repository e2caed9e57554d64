"""--method tests.helpers.scene_method_items: the known scene, predicted from the method's own
items with their own K (see scene_method.OwnItemsScene)."""
from tests.helpers.scene_method import OwnItemsScene

METHOD = OwnItemsScene

"""Word lists behind the sample catalogue: per-root brands, materials, title and text parts.

Each root of the category tree (:mod:`.sample_tree`) has a :class:`RootVocabulary` (its file
name, words and image looks); the generic title words, badges, rating features and market
domains are shared by all. All brands are invented.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RootVocabulary:
    """What a top-level category contributes besides its tree: file name, words, looks."""

    file_name: str
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    materials: tuple[str, ...]
    colours: tuple[str, ...]
    uses: tuple[str, ...]
    features: tuple[str, ...]
    descriptions: tuple[str, ...]
    extra_details: tuple[tuple[str, tuple[str, ...]], ...]
    price_range: tuple[float, float]
    #: base background colour of its product images
    background: tuple[int, int, int]
    #: background texture of its product images (see images.TEXTURES)
    texture: str


ROOTS: dict[str, RootVocabulary] = {
    "Electronics": RootVocabulary(
        file_name="Electronics",
        brands=("Voltix", "Sonara", "Kestrel Audio", "Nexon", "Pixelight", "Arcwave", "Teknova"),
        adjectives=("Wireless", "Bluetooth 5.3", "4K", "Fast Charging", "USB-C", "Digital"),
        materials=("ABS Plastic", "Aluminium", "Copper", "Silicone", "Polycarbonate"),
        colours=("Black", "Grey", "Silver", "White", "Space Grey", "Dark Blue"),
        uses=("TV", "Laptop", "Home Office", "Gaming", "Travel"),
        features=(
            "PLUG AND PLAY: connect the {noun} in seconds, no drivers or apps needed",
            "BUILT TO LAST: {material} housing survives drops and daily use",
            "WIDE COMPATIBILITY: works with TVs, laptops, tablets and games consoles",
            "LOW POWER: draws under {number} W and switches off automatically",
            "WHAT YOU GET: 1 x {noun}, quick start guide, 24-month warranty",
            "CRYSTAL CLEAR SIGNAL: gold-plated contacts and shielded {material} core",
        ),
        descriptions=(
            "The {brand} {noun} brings reliable performance to your {use} setup.",
            "Engineered for everyday {use} use, this {noun} pairs instantly with your devices.",
            "Upgrade your {use} with a {colour} {noun} made from {material}.",
        ),
        extra_details=(
            ("Batteries Required", ("No", "Yes")),
            ("Connectivity Technology", ("USB", "Bluetooth", "Wired", "Wi-Fi")),
            ("Power Source", ("Battery Powered", "Corded Electric", "USB")),
        ),
        price_range=(6.0, 320.0),
        background=(34, 40, 58),
        texture="gradient",
    ),
    "Home & Kitchen": RootVocabulary(
        file_name="Home_and_Kitchen",
        brands=("Hearthwell", "Maison Oak", "CasaLuma", "Everyday Essentials", "Bramble & Co"),
        adjectives=(
            "Non-Stick",
            "Dishwasher Safe",
            "Scandinavian",
            "Rustic",
            "Extra Large",
            "Cosy",
        ),
        materials=("Stainless Steel", "Ceramic", "Cotton", "Bamboo", "Glass", "Cast Iron"),
        colours=("White", "Cream", "Beige", "Sage Green", "Terracotta", "Natural"),
        uses=("Kitchen", "Living Room", "Bedroom", "Home", "Dining Table"),
        features=(
            "EASY TO CLEAN: the {material} surface wipes clean and is dishwasher safe",
            "SPACE SAVING: the slim {noun} fits neatly in any {use}",
            "PERFECT GIFT: ideal for housewarmings, weddings and birthdays",
            "FOOD SAFE: BPA-free {material}, tested to EU standards",
            "TIMELESS LOOK: a {colour} finish that suits every {use}",
        ),
        descriptions=(
            "Bring calm to your {use} with the {brand} {noun}.",
            "Crafted from {material}, this {noun} is made for years of everyday use.",
            "A {colour} {noun} that is as practical as it is beautiful.",
        ),
        extra_details=(
            ("Care Instructions", ("Hand Wash Only", "Dishwasher Safe", "Machine Wash")),
            ("Capacity", ("1 Litres", "1.5 Litres", "500 Millilitres", "3 Litres")),
            ("Room Type", ("Kitchen", "Bedroom", "Living Room")),
        ),
        price_range=(4.0, 180.0),
        background=(232, 218, 196),
        texture="plain",
    ),
    "Sports & Outdoors": RootVocabulary(
        file_name="Sports_and_Outdoors",
        brands=("Northpeak", "TrailForge", "Apex Motion", "Everyday Essentials", "Riverstone"),
        adjectives=(
            "Waterproof",
            "Breathable",
            "Ultralight",
            "Anti-Slip",
            "All-Weather",
            "Quick-Dry",
        ),
        materials=("Ripstop Nylon", "Neoprene", "TPE", "Polyester", "EVA Foam", "Rubber"),
        colours=("Forest Green", "Orange", "Navy", "Black", "Camo", "Red"),
        uses=("Camping", "Hiking", "Gym", "Cycling", "Outdoor Training"),
        features=(
            "WEATHER READY: {material} shell keeps you going in wind and rain",
            "GO ANYWHERE: weighs only {number}00 g and packs down small",
            "MADE FOR {use_upper}: tested by athletes on trails and in gyms",
            "NON-SLIP GRIP: textured {material} stays put when you sweat",
            "LIFETIME SUPPORT: replacement parts for your {noun} available for 5 years",
        ),
        descriptions=(
            "Whether you are {use_lower} or training, the {brand} {noun} keeps up.",
            "The {noun} is made from tough {material} for seasons of {use_lower}.",
            "Pack the {colour} {noun} and head out: built for {use_lower}.",
        ),
        extra_details=(
            ("Sport Type", ("Camping & Hiking", "Cycling", "Fitness", "Football", "Swimming")),
            ("Age Range (Description)", ("Adult", "Youth", "Unisex Adult")),
        ),
        price_range=(5.0, 260.0),
        background=(64, 122, 78),
        texture="diagonal",
    ),
    "Toys & Games": RootVocabulary(
        file_name="Toys_and_Games",
        brands=("Wonderbloom", "PlayNest", "Tinker Tots", "Jolly Fox", "BrightBricks"),
        adjectives=("Educational", "Kids'", "Colourful", "Creative", "STEM", "Fun"),
        materials=("Wood", "Plush Fabric", "ABS Plastic", "Cardboard", "Vinyl"),
        colours=("Multicolour", "Pink", "Yellow", "Red", "Blue", "Rainbow"),
        uses=("Kids", "Toddlers", "Family Game Night", "Boys and Girls", "Ages 3+"),
        features=(
            "SAFE FOR KIDS: non-toxic {material}, tested to EN71 and ASTM",
            "HOURS OF FUN: the {noun} encourages creativity and fine motor skills",
            "RECOMMENDED AGE: {number} years and up",
            "GREAT GIFT: perfect for birthdays and Christmas for {use}",
            "EASY STORAGE: everything packs back into the sturdy box",
        ),
        descriptions=(
            "Let imaginations run wild with the {brand} {noun}.",
            "A {colour} {noun} for {use}: safe {material}, endless play.",
            "The {noun} makes learning through play easy and fun.",
        ),
        extra_details=(
            (
                "Manufacturer recommended age",
                ("3 years and up", "6 years and up", "18 months and up"),
            ),
            ("Number of Pieces", ("1", "12", "48", "100", "1000")),
        ),
        price_range=(3.0, 120.0),
        background=(250, 214, 92),
        texture="dots",
    ),
    "Office Products": RootVocabulary(
        file_name="Office_Products",
        brands=("Scriptura", "Deskline", "Papyra", "Everyday Essentials"),
        adjectives=("Refillable", "A4", "Smooth-Writing", "Quick-Drying", "Ergonomic"),
        materials=("Paper", "Plastic", "Metal", "Recycled Paper"),
        colours=("Blue", "Black", "Assorted", "Red"),
        uses=("Office", "School", "Home Office", "Students"),
        features=(
            "SMOOTH WRITING: quick-drying ink for smudge-free notes",
            "EVERYDAY ESSENTIAL: a reliable {noun} for {use}",
            "PACK SIZE: {number} per pack",
        ),
        descriptions=(
            "The {brand} {noun} keeps your {use} organised.",
            "A dependable {noun} made from {material}.",
        ),
        extra_details=(("Number of Items", ("1", "5", "10", "24")),),
        price_range=(1.5, 60.0),
        background=(198, 208, 224),
        texture="grid",
    ),
}

#: Words any product may carry in its title.
GENERIC_ADJECTIVES = (
    "Premium",
    "Compact",
    "Portable",
    "Heavy Duty",
    "Lightweight",
    "Professional",
    "Classic",
    "Deluxe",
    "Upgraded",
    "Durable",
    "Eco-Friendly",
    "2-Pack",
    "Set of 3",
)

#: Nouns that say nothing about the category: the noisy end of real titles.
GENERIC_NOUNS = ("Starter Kit", "Bundle", "Gift Set", "Value Pack", "Essentials Kit")

#: Title words the UK copy of a product spells differently.
UK_SPELLINGS = {
    "Color": "Colour",
    "Organizer": "Organiser",
    "Gray": "Grey",
    "Tire": "Tyre",
    "Aluminum": "Aluminium",
}

BADGES = ("", "", "", "", "", "", "Amazon's Choice", "#1 Best Seller")

RATING_FEATURES = (
    "Value for money",
    "Easy to use",
    "Sturdiness",
    "Quality of material",
    "Easy to clean",
    "Sound quality",
    "Comfort",
)

REVIEW_FILTER_WORDS = (
    "quality",
    "price",
    "size",
    "easy to use",
    "worth the money",
    "sturdy",
    "battery life",
    "colour",
    "instructions",
)

MARKET_DOMAINS = {
    "us": ("amazon.com", "$"),
    "uk": ("amazon.co.uk", "£"),
    "ca": ("amazon.ca", "CDN$ "),
    "au": ("amazon.com.au", "$"),
    "de": ("amazon.de", "€"),
    "fr": ("amazon.fr", "€"),
    "es": ("amazon.es", "€"),
    "it": ("amazon.it", "€"),
    "in": ("amazon.in", "₹"),
    "jp": ("amazon.co.jp", "￥"),
}

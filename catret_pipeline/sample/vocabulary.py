"""Word lists behind the sample catalogue: the category tree, brands, materials, title parts.

The tree imitates Amazon's browse tree as XMarket records it (``categories`` = root-to-leaf
path). A leaf maps to the product nouns used in titles: some nouns repeat words of the leaf or
its parent ("Radio Antenna" under "Radio Antennas"), some are only synonyms ("FM Aerial"), so
a text model gets real but imperfect signal. Names such as "Accessories", "Balls", "Parts",
"Cables" or "Replacement Parts" occur under several parents on purpose: the retrieval query is
a category *name*, and real trees are full of such ambiguous names.

All brands are invented.
"""

from __future__ import annotations

from dataclasses import dataclass

# Internal nodes are dicts (child name -> subtree); leaves are lists of product nouns.
CategorySpec = dict[str, "CategorySpec | list[str]"]

TREE: CategorySpec = {
    "Electronics": {
        "Accessories & Supplies": {
            "Audio & Video Accessories": {
                "Antennas": {
                    "Radio Antennas": [
                        "Radio Antenna",
                        "FM Aerial",
                        "AM Loop Antenna",
                        "Dipole FM Antenna",
                    ],
                    "TV Antennas": [
                        "TV Antenna",
                        "HDTV Aerial",
                        "Indoor Digital Antenna",
                        "Freeview Aerial",
                    ],
                },
                "Cables": {
                    "HDMI Cables": ["HDMI Cable", "High Speed HDMI Lead", "4K HDMI Cord"],
                },
                "Remote Controls": [
                    "Remote Control",
                    "Universal Remote",
                    "TV Remote",
                    "Replacement Remote",
                ],
            },
            "Batteries & Chargers": {
                "Batteries": [
                    "AA Batteries",
                    "Rechargeable Batteries",
                    "Lithium Coin Cells",
                    "AAA Battery Pack",
                ],
                "Chargers": [
                    "Battery Charger",
                    "USB Wall Charger",
                    "Fast Charger",
                    "Charging Dock",
                ],
            },
        },
        "Camera & Photo": {
            "Accessories": {
                "Bags & Cases": ["Camera Bag", "Camera Case", "Sling Bag for Cameras", "Hard Case"],
                "Tripods & Monopods": [
                    "Tripod",
                    "Travel Tripod",
                    "Mini Tabletop Tripod",
                    "Monopod",
                ],
            },
            "Digital Cameras": [
                "Compact Digital Camera",
                "Point and Shoot Camera",
                "DSLR Camera",
                "Mirrorless Camera Body",
            ],
            "Lenses": ["Camera Lens", "Prime Lens", "Telephoto Zoom Lens", "Wide Angle Lens"],
        },
        "Computers & Accessories": {
            "Computer Accessories & Peripherals": {
                "Keyboards, Mice & Accessories": {
                    "Keyboards": ["Keyboard", "Wireless Keyboard", "Mechanical Gaming Keyboard"],
                    "Mice": ["Wireless Mouse", "Optical Mouse", "Ergonomic Mouse", "Gaming Mouse"],
                    "Mouse Pads": ["Mouse Pad", "Desk Mat", "Gel Wrist Rest Mouse Mat"],
                },
                "Cables & Accessories": {
                    "Cables": {
                        "USB Cables": ["USB-C Cable", "USB Charging Cable", "Micro USB Lead"],
                        "Ethernet Cables": [
                            "Ethernet Cable",
                            "Cat6 Network Cable",
                            "LAN Patch Cord",
                        ],
                    },
                },
            },
            "Laptop Accessories": {
                "Bags, Cases & Sleeves": ["Laptop Sleeve", "Laptop Backpack", "Notebook Case"],
            },
            "Computer Components": {
                "Replacement Parts": {
                    "Laptop Replacement Screens": [
                        "Replacement LCD Screen",
                        "Laptop Display Panel",
                        "LED Screen Assembly",
                    ],
                },
            },
        },
        "Headphones": {
            "Earbud Headphones": ["Wireless Earbuds", "In-Ear Headphones", "Earphones"],
            "Over-Ear Headphones": [
                "Over-Ear Headphones",
                "Noise Cancelling Headphones",
                "Studio Headphones",
            ],
            "Accessories": [
                "Replacement Ear Pads",
                "Headphone Stand",
                "Headphone Case",
                "Audio Splitter",
            ],
        },
        "Wearable Technology": ["Smart Watch", "Fitness Tracker", "Activity Band"],
    },
    "Home & Kitchen": {
        "Kitchen & Dining": {
            "Cookware": {
                "Pots & Pans": {
                    "Frying Pans": ["Frying Pan", "Non-Stick Skillet", "Omelette Pan"],
                    "Saucepans": ["Saucepan", "Milk Pan", "Saucepan Set with Lids"],
                },
            },
            "Kitchen Utensils & Gadgets": {
                "Baking Tools & Accessories": {
                    "Measuring Cups": ["Measuring Cups", "Measuring Spoon Set", "Measuring Jug"],
                },
                "Cooking Utensils": ["Spatula", "Utensil Set", "Slotted Spoon", "Kitchen Tongs"],
            },
            "Small Appliances": {
                "Coffee Makers": ["Coffee Maker", "Espresso Machine", "Filter Coffee Machine"],
                "Blenders": ["Blender", "Smoothie Maker", "Hand Blender"],
                "Parts & Accessories": {
                    "Replacement Parts": [
                        "Replacement Blade Assembly",
                        "Spare Jug",
                        "Replacement Gasket",
                    ],
                },
            },
            "Storage & Organisation": [
                "Food Storage Containers",
                "Airtight Jar Set",
                "Lunch Box",
            ],
        },
        "Home Décor": {
            "Candles": ["Scented Candle", "Pillar Candle", "Tea Light Candles"],
            "Clocks": ["Wall Clock", "Silent Wall Clock", "Alarm Clock", "Bedside Clock"],
        },
        "Bedding": {
            "Sheets & Pillowcases": ["Fitted Sheet", "Pillowcase Pair", "Bed Sheet Set"],
            "Pillows": ["Pillow", "Memory Foam Pillow", "Bed Pillows", "Duvet"],
        },
        "Storage & Organisation": {
            "Baskets & Bins": ["Storage Basket", "Storage Bin", "Woven Basket"],
            "Clothing & Closet Storage": [
                "Hanging Wardrobe Organizer",
                "Shoe Rack",
                "Clothes Hangers",
            ],
            "Accessories": ["Drawer Dividers", "Storage Labels", "Vacuum Storage Bags"],
        },
        "Vacuums & Floor Care": {
            "Vacuums": {
                "Robotic Vacuums": [
                    "Robot Vacuum Cleaner",
                    "Robotic Vacuum",
                    "Self-Charging Robot Hoover",
                ],
                "Upright Vacuums": [
                    "Upright Vacuum Cleaner",
                    "Bagless Upright Hoover",
                    "Corded Vacuum",
                ],
            },
            "Parts & Accessories": {
                "Filters": ["HEPA Filter", "Replacement Vacuum Filter", "Filter Kit"],
                "Bags": ["Vacuum Bags", "Dust Bags", "Replacement Hoover Bags"],
            },
        },
    },
    "Sports & Outdoors": {
        "Outdoor Recreation": {
            "Camping & Hiking": {
                "Tents & Shelters": {
                    "Tents": ["Tent", "Dome Tent", "Backpacking Tent", "Pop Up Tent", "Tarp"],
                },
                "Sleeping Bags & Camp Bedding": {
                    "Sleeping Bags": ["Sleeping Bag", "Mummy Sleeping Bag", "Down Sleeping Bag"],
                },
                "Lights & Lanterns": {
                    "Headlamps": ["Headlamp", "LED Head Torch", "Rechargeable Headlight"],
                },
                "Backpacks & Bags": ["Hiking Backpack", "Daypack", "Dry Bag"],
            },
            "Cycling": {
                "Accessories": {
                    "Lights": ["Bike Light Set", "Rear Bicycle Light", "Front Bike Light"],
                    "Bike Locks": ["Bike Lock", "D-Lock", "Cable Lock for Bicycles"],
                },
                "Helmets": ["Bike Helmet", "Cycling Helmet", "MTB Helmet"],
                "Parts": {
                    "Brakes": ["Brake Pads", "Disc Brake Rotor", "Brake Cable Set"],
                    "Tyres & Tubes": ["Bike Tyre", "Inner Tube", "Puncture Resistant Tire"],
                },
            },
        },
        "Sports & Fitness": {
            "Exercise & Fitness": {
                "Yoga": {
                    "Yoga Mats": ["Yoga Mat", "Non-Slip Exercise Mat", "Thick Pilates Mat"],
                    "Yoga Blocks": ["Yoga Block", "Foam Brick", "Cork Yoga Block"],
                },
                "Strength Training Equipment": {
                    "Dumbbells": ["Dumbbell Set", "Adjustable Dumbbells", "Hex Dumbbell"],
                    "Kettlebells": ["Kettlebell", "Cast Iron Kettlebell", "Competition Kettlebell"],
                },
                "Accessories": ["Resistance Bands", "Gym Gloves", "Skipping Rope", "Foam Roller"],
            },
            "Team Sports": {
                "Football": {
                    "Balls": ["Football", "Soccer Ball", "Training Ball Size 5"],
                },
                "Basketball": {
                    "Balls": ["Basketball", "Indoor Outdoor Basketball", "Street Basketball"],
                    "Hoops": ["Basketball Hoop", "Wall Mounted Hoop", "Door Hoop Set"],
                },
            },
            "Water Sports": {
                "Swimming": {
                    "Goggles": ["Swimming Goggles", "Anti-Fog Swim Goggles", "Mirrored Goggles"],
                },
            },
        },
    },
    "Toys & Games": {
        "Building Toys": {
            "Building Sets": ["Building Blocks Set", "Construction Bricks", "Magnetic Tiles"],
            "Marble Runs": ["Marble Run", "Marble Track Set", "Marble Maze"],
        },
        "Games": {
            "Board Games": ["Board Game", "Strategy Game", "Family Board Game"],
            "Card Games": ["Card Game", "Playing Cards", "Party Card Game"],
            "Puzzles": {
                "Jigsaw Puzzles": ["Jigsaw Puzzle 1000 Pieces", "Jigsaw Puzzle", "Floor Puzzle"],
                "Brain Teasers": ["Brain Teaser", "Puzzle Cube", "Metal Puzzle Set"],
            },
        },
        "Dolls & Accessories": {
            "Dolls": ["Fashion Doll", "Baby Doll", "Rag Doll"],
            "Dollhouses": ["Dollhouse", "Wooden Dolls House", "Doll House Furniture Set"],
            "Accessories": ["Doll Clothes", "Doll Pram", "Doll Accessory Set"],
        },
        "Sports & Outdoor Play": {
            "Kites & Flying Toys": ["Kite", "Stunt Kite", "Foam Glider"],
            "Pools & Water Toys": ["Water Pistol", "Paddling Pool", "Sprinkler Toy"],
            "Balls": ["Play Ball", "Bouncy Ball", "Sensory Ball Set"],
        },
        "Toy Vehicles": {
            "Cars": ["Toy Car", "Die-Cast Car", "Pull Back Cars"],
            "Trains": ["Wooden Train Set", "Toy Train", "Train Track Set"],
            "Remote-Control Vehicles": {
                "RC Cars": ["Remote Control Car", "RC Truck", "Off-Road RC Car"],
                "Parts": ["RC Replacement Battery", "Spare Propellers", "RC Car Tyres"],
            },
        },
        "Stuffed Animals & Plush Toys": ["Teddy Bear", "Plush Toy", "Cuddly Unicorn"],
    },
    "Office Products": {
        "Office & School Supplies": {
            "Writing & Correction Supplies": {
                "Pens": ["Ballpoint Pens", "Gel Pens", "Fountain Pen"],
                "Pencils": ["Pencils", "Mechanical Pencil", "Colouring Pencils"],
            },
            "Paper": {
                "Notebooks": ["Notebook", "Spiral Notebook", "A5 Notepad"],
            },
        },
        "Office Electronics": {
            "Calculators": ["Calculator", "Scientific Calculator", "Desktop Calculator"],
            "Accessories": ["Printer Cable", "Label Tape", "Laminating Pouches"],
        },
    },
}


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
